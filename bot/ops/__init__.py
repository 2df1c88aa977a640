"""What an operator sees of a running bot: Prometheus metrics (`metrics`) and the ids every log line of a
turn or request carries (`logs`). It imports nothing else of the bot, so every package may call it."""
