"""The terminal client: `python3 client.py alice` / `spartan-client alice`."""
