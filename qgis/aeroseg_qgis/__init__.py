"""aeroseg for QGIS: segment the raster layers of the map by typing class names.

The model runs in aeroseg's own environment, as a subprocess (``aeroseg predict`` for the Processing
algorithm ``aeroseg:segment``, a long-lived ``aeroseg serve`` for the dock); QGIS's Python never imports
torch.
"""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import AerosegPlugin

    return AerosegPlugin(iface)
