"""The offline simulator: a stand-in Bot API (sandbox), the harness that runs the real bot
against it on a simulated clock, and the demo built on both. Used by `aftercare demo` and
the tests; nothing here is needed to run the bot against Telegram."""
