"""The delivery worker: alerts to webhooks and Apprise channels, once, with a log."""
