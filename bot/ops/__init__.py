"""Operating the bot: commands an operator runs beside it (`slack-assistant check`)."""
