"""`callbot demo`: the real bot in a browser, against built-in stand-ins for Slack and Evo Voice."""


class DemoError(Exception):
    """Something the page asked for that can't be done (unknown message, form or phone)."""
