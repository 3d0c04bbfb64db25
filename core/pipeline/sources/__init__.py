"""Where uploads come from: files named on the command line (scan), a watched folder,
and the HTTP API (workers/api), all through ``submit``."""
