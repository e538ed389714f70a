import os

# Every test talks to loopback stand-ins over plain HTTP and WebSocket: no certificate is checked.
# Loading the machine's CA list is what makes `import aiohttp` slow (it builds two SSL contexts at
# import, about 0.1 CPU-s), in each pytest worker and in every `python -m bot` a test starts (they
# inherit this environment).
os.environ.setdefault("SSL_CERT_FILE", os.devnull)
