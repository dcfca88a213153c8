"""Measuring and tuning detection on labelled replays."""
