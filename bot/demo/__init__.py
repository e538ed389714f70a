"""`callbot demo`: the real bot in a browser, against built-in stand-ins for Slack and Evo Voice."""
