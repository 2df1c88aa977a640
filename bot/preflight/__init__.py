"""Before the bot runs: `slack-assistant check` looks at every part of a deployment (Slack tokens and scopes,
OpenAI key and model, knowledge stores, Redis) and says what to fix."""
