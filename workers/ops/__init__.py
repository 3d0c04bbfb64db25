"""Running the distributed stack: local processes (`idwatch up`/`down`), queue lengths
and workers seen (`idwatch status`), the watched-folder process (`idwatch watch`)."""
