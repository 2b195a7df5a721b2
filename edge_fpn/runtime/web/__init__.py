"""The MJPEG web viewer: a stdlib HTTP server (server.py) and its one page (index.html)."""
