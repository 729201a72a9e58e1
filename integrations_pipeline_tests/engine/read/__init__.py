"""Tests of the engine's read side: pagination, extraction, stream loads."""
