"""The faust worker: decode, call the engine, publish. Thin by design."""
