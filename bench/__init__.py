"""`python -m bench`: bursts of `/call` against the real bot and a bare Bolt app, on loopback.

    bench process      the load driver and the measurements, and the driver's Slack stand-in
                       (the Socket Mode websocket and response_urls)
    stand-ins process  `python -m bench.standins`: Slack's Web API and Evo Voice for the bot
                       (`--standins inline` puts them in the bench process instead)
    bot process        `python -m bot`, configured through its environment like a deployment
    bare process       `python -m bench.bare`: a slack-bolt AsyncApp; its listener acks, then sleeps

Each (mode, N) pair starts a fresh bot and a fresh bare app: peak RSS belongs to that burst alone.
All times are `time.monotonic()`, one clock for every process on the host.
"""
