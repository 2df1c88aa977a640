"""A team's own tools, as a deployment would write them (loaded with ASSISTANT_TOOL_MODULES)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field

from bot.tools import ToolContext, tool

WEATHER_SERVICE_SECONDS = 1.0


class WeatherArgs(BaseModel):
    city: str = Field(description="City name, e.g. Lisbon")
    unit: str = Field(description="celsius or fahrenheit")


@tool
async def get_weather(args: WeatherArgs) -> dict[str, object]:
    """The current weather in a city."""
    await asyncio.sleep(WEATHER_SERVICE_SECONDS)  # asking a weather service takes a moment
    degrees = {"lisbon": 21, "oslo": -3}.get(args.city.lower(), 15)
    if args.unit == "fahrenheit":
        degrees = round(degrees * 9 / 5 + 32)
    return {"city": args.city, "temperature": degrees, "unit": args.unit, "sky": "clear"}


class TicketArgs(BaseModel):
    ticket_id: str


@tool
async def open_ticket(args: TicketArgs, ctx: ToolContext) -> str:
    """Look up a support ticket by id."""
    raise RuntimeError(f"ticket backend down (asked by {ctx.user_id})")


class NapArgs(BaseModel):
    seconds: float


@tool
async def nap(args: NapArgs) -> str:
    """Wait a while (for tests of the time limit)."""
    await asyncio.sleep(args.seconds)
    return "rested"
