"""Write the JSON Schema files under schemas/ from the contract structs.

Run after changing a contract: ``python scripts/generate_schemas.py``. The test
suite fails while a schema file differs from what this writes.
"""

import json
from pathlib import Path

from intentwatch.schemas import SCHEMA_FILES, json_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def render(struct) -> str:
    return json.dumps(json_schema(struct), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    for name, struct in SCHEMA_FILES.items():
        (SCHEMAS / name).write_text(render(struct))
        print(f"wrote schemas/{name}")
