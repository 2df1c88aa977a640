"""Entry point for the Slack CLI: `slack run` runs slack-cli-hooks' start hook, which runs ./app.py. The bot
starts in Socket Mode with the tokens the CLI provides (SLACK_APP_TOKEN, SLACK_BOT_TOKEN); everything else
comes from the environment or .env, as for `uv run slack-assistant`."""

from handlers.cli import main

if __name__ == "__main__":
    # Not sys.argv: the hook's own flags (--protocol, --boundary) are still there.
    main([])
