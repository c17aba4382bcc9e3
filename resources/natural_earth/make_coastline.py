"""Build the offline 1:110m coastline that the figures draw (run once; the result is committed).

Source: the Natural Earth 1:110m Admin-0 countries polygons (public domain)
that the geopandas 0.14.4 wheel ships as
``geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp``. The
polygons are dissolved into one land outline (``shapely.unary_union``, so
borders between countries vanish) and the outline's boundary is written as a
polyline shapefile in the layout cartopy's ``pre_existing_data_dir`` expects::

    pip download --no-deps geopandas==0.14.4 -d /tmp/gp
    python resources/natural_earth/make_coastline.py /tmp/gp/geopandas-0.14.4-py3-none-any.whl

writes ``resources/natural_earth/shapefiles/natural_earth/physical/
ne_110m_coastline.{shp,shx,dbf,prj}``. The wheel is read as a zip file; an
unpacked ``naturalearth_lowres.shp`` may be given instead. Segments along the
antimeridian (where the source cuts polygons at ±180°) and along the South
Pole edge of Antarctica are not coastline and are dropped. Only shapely and
pyshp are needed (both come with cartopy); the output is byte-identical from
run to run (the date in the dBase header is fixed to the source's date).
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import shapefile
import shapely

MEMBER = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres"
OUT = Path(__file__).resolve().parent / "shapefiles" / "natural_earth" / "physical" / "ne_110m_coastline"
SOURCE_DATE = (2024 - 1900, 4, 28)  # the files' date inside the geopandas 0.14.4 wheel
EDGE = 1e-6  # degrees: how close to ±180° or -90° a vertex is "on the cut"


def read_polygons(path: Path) -> list[shapely.Geometry]:
    """The country polygons of the source: from the wheel (zip) or an unpacked ``.shp``."""
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as wheel:
            parts = {ext: io.BytesIO(wheel.read(f"{MEMBER}.{ext}")) for ext in ("shp", "shx", "dbf")}
        reader = shapefile.Reader(**parts)
    else:
        reader = shapefile.Reader(str(path))
    return [shapely.geometry.shape(shape.__geo_interface__) for shape in reader.shapes()]


def on_cut(a: np.ndarray, b: np.ndarray) -> bool:
    """True for a segment a-b lying on the antimeridian or on the South Pole edge."""
    meridian = abs(abs(a[0]) - 180.0) < EDGE and abs(abs(b[0]) - 180.0) < EDGE
    pole = a[1] < -90.0 + EDGE and b[1] < -90.0 + EDGE
    return meridian or pole


def coast_lines(polygons: list[shapely.Geometry]) -> list[np.ndarray]:
    """The land outline as lines (lon, lat), without the artificial cut segments."""
    land = shapely.unary_union([shapely.make_valid(p) for p in polygons])
    lines: list[np.ndarray] = []
    for ring in shapely.get_parts(shapely.get_parts(land.boundary)):
        xy = np.asarray(ring.coords)
        keep = np.array([not on_cut(xy[i], xy[i + 1]) for i in range(len(xy) - 1)])
        start = None
        for i, ok in enumerate(np.append(keep, False)):  # runs of kept segments -> lines
            if ok and start is None:
                start = i
            elif not ok and start is not None:
                lines.append(xy[start:i + 1])
                start = None
    return lines


def write(lines: list[np.ndarray], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with shapefile.Writer(str(out), shapeType=shapefile.POLYLINE) as w:
        w.field("featurecla", "C", size=16)
        w.field("scalerank", "N", size=4)
        for xy in lines:
            w.line([np.round(xy, 6).tolist()])
            w.record("Coastline", 0)
    out.with_suffix(".prj").write_text(
        'GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
        'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]'
    )
    with open(out.with_suffix(".dbf"), "r+b") as dbf:  # fixed header date: reproducible bytes
        dbf.seek(1)
        dbf.write(bytes(SOURCE_DATE))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    lines = coast_lines(read_polygons(Path(argv[0])))
    write(lines, OUT)
    print(f"{len(lines)} coastline lines, {sum(len(x) for x in lines)} vertices -> {OUT}.shp")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
