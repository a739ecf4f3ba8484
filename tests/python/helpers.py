"""Helpers shared by the SDK test modules (fixtures live in conftest.py):
unique prompts, the mock's completion length, and the tools the tool-call
tests offer, in each API's spelling.
"""

from __future__ import annotations

import uuid

# The mock's default completion length, in words (= tokens).
MOCK_OUTPUT_TOKENS = 16


def unique_prompt(label: str) -> str:
    """A prompt no other test sends, so answers are independent of order."""
    return f"{label} {uuid.uuid4().hex}"


WEATHER = (
    "get_weather",
    "Current weather for a city.",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer"},
        },
        "required": ["city", "unit"],
    },
)
TIME = (
    "get_time",
    "Local time in a timezone.",
    {
        "type": "object",
        "properties": {"timezone": {"type": "string"}},
        "required": ["timezone"],
    },
)


def openai_tool(tool: tuple[str, str, dict]) -> dict:
    """A `(name, description, JSON schema)` tool as Chat Completions spells it."""
    name, description, parameters = tool
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def anthropic_tool(tool: tuple[str, str, dict]) -> dict:
    """A `(name, description, JSON schema)` tool as Anthropic Messages spells it."""
    name, description, parameters = tool
    return {"name": name, "description": description, "input_schema": parameters}


def check_weather_args(args) -> None:
    # The mock derives arguments from the schema the same way in every
    # format: a broken schema translation changes them.
    assert isinstance(args, dict), args
    assert isinstance(args["city"], str) and args["city"]
    assert args["unit"] == "celsius"
    assert args["days"] == 42
