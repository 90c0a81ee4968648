"""``aeroseg serve``: a local web application to segment GeoTIFFs on a map with any class list.

The page (``static/``, Leaflet vendored with its licence) shows the raster as tiles, sends the class list
and the current view, and shows the class overlay with a legend. The server (:mod:`aeroseg.serve.app`)
runs the same code as ``aeroseg predict`` and caches image features per raster, so changing only the
class list re-runs only the class-dependent part of the model. Needs the ``serve`` extra.
"""
