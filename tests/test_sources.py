"""Sources: files, stores, patterns and lists become one lazy canonical field; bad input fails in one sentence."""

from __future__ import annotations

import logging

import cftime
import numpy as np
import pytest
import xarray as xr

from pipeline import sources, synthetic, timeaxis

N_LAT, N_LON = 5, 6
LAT = np.linspace(-40.0, 40.0, N_LAT)
LON = np.arange(N_LON) * 60.0


def _values(n_time: int, seed: int = 0) -> np.ndarray:
    values = np.random.default_rng(seed).standard_normal((n_time, N_LAT, N_LON))
    values[:, 0, 0] = np.nan  # a land cell
    return values


def _write(path, values, time, units, calendar=None, *, lat=LAT, lon=LON, engine="h5netcdf", encoding=None):
    """A file holding ``values`` with raw (undecoded) time numbers and the given time attributes."""
    time_attrs = {"units": units} if units else {}
    if calendar:
        time_attrs["calendar"] = calendar
    ds = xr.Dataset(
        {"tos": (("time", "lat", "lon"), values, {"units": "degC", "long_name": "sea surface temperature"})},
        coords={"time": ("time", np.asarray(time, dtype=np.float64), time_attrs), "lat": lat, "lon": lon},
    )
    if str(path).endswith(".zarr"):
        ds.to_zarr(path, zarr_format=int(engine), consolidated=False, encoding={"tos": encoding or {}})
    else:
        ds.to_netcdf(path, engine=engine, encoding={"tos": encoding or {}})
    return path


def _spec(path, **extra):
    return {"source": "netcdf", "path": path if isinstance(path, list) else str(path), **extra}


# ---------------------------------------------------------------- several files are one field


@pytest.fixture
def decades(tmp_path):
    """36 monthly steps 1850-1852 in one file and split in three 'decade' files with their own reference dates."""
    values = _values(36)
    dates = [cftime.DatetimeNoLeap(1850 + k // 12, k % 12 + 1, 16) for k in range(36)]
    whole = _write(tmp_path / "whole.nc", values, cftime.date2num(dates, "days since 1850-01-01", "noleap"),
                   "days since 1850-01-01", "noleap")
    parts = []
    for i in range(3):
        units = f"days since {1850 + i}-01-01"
        part = slice(12 * i, 12 * (i + 1))
        parts.append(_write(tmp_path / f"tos_Omon_{1850 + i}0101-{1850 + i}1231.nc", values[part],
                            cftime.date2num(dates[part], units, "noleap"), units, "noleap",
                            engine="scipy" if i == 1 else "h5netcdf"))
    return whole, parts, dates, values


def test_decade_files_equal_the_single_file_as_a_list_and_a_glob(decades, tmp_path):
    whole, parts, dates, values = decades
    one = sources.open_field("tos", _spec(whole))
    listed = sources.open_field("tos", _spec([str(parts[2]), str(parts[0]), str(parts[1])]))
    globbed = sources.open_field("tos", _spec(tmp_path / "tos_Omon_*0101-*1231.nc"))
    for ds in (listed, globbed):
        assert ds["field"].dims == ("time", "lat", "lon") and ds["field"].shape == (36, N_LAT, N_LON)
        np.testing.assert_array_equal(ds["field"].values, one["field"].values)
        np.testing.assert_array_equal(ds["field"].values, values)
        np.testing.assert_array_equal(ds["time"].values, one["time"].values)
        np.testing.assert_array_equal(ds["lat"].values, LAT)
        np.testing.assert_array_equal(ds["lon"].values, LON)
        assert list(ds["time"].values) == dates
        np.testing.assert_array_equal(ds["field"].isel(lat=slice(1, 3)).values, values[:, 1:3])
        np.testing.assert_array_equal(ds["field"].isel(time=slice(10, 14), lon=4).values, values[10:14, :, 4])
        np.testing.assert_array_equal(ds["field"].isel(time=[30, 2, 13]).values, values[[30, 2, 13]])
        assert ds.attrs["source_files"] == 3 and ds["field"].attrs["units"] == "degC"
        assert ds["field"].attrs["source_variable"] == "tos"
    assert globbed.attrs["source"] == str(tmp_path / "tos_Omon_*0101-*1231.nc")
    assert listed.attrs["source"] == ", ".join(map(str, [parts[2], parts[0], parts[1]]))
    assert one.attrs["source"] == str(whole) and one.attrs["source_files"] == 1
    for ds in (one, listed, globbed):
        ds.close()


def test_the_joined_field_is_lazy_and_a_band_read_reads_only_the_band(decades, monkeypatch):
    _, parts, _, values = decades
    boxes = []
    read_box = sources._read_box

    def spy(piece, t, lat, lon):
        block = read_box(piece, t, lat, lon)
        boxes.append((piece.path.name, block.shape))
        return block

    monkeypatch.setattr(sources, "_read_box", spy)
    ds = sources.open_field("tos", _spec([str(p) for p in parts]))
    assert not ds["field"].variable._in_memory and boxes == []  # nothing read on opening
    np.testing.assert_array_equal(ds["field"].isel(lat=slice(2, 4)).values, values[:, 2:4])
    assert boxes == [(p.name, (12, 2, N_LON)) for p in parts]
    boxes.clear()
    np.testing.assert_array_equal(ds["field"].isel(time=slice(13, 20)).values, values[13:20])
    assert boxes == [(parts[1].name, (7, N_LAT, N_LON))]  # only the file holding those steps
    ds.close()


def test_close_closes_every_file(decades, monkeypatch):
    _, parts, _, _ = decades
    closed = []
    close = xr.Dataset.close

    def spy(self):
        closed.append(self.encoding.get("source"))
        close(self)

    monkeypatch.setattr(xr.Dataset, "close", spy)
    ds = sources.open_field("tos", _spec([str(p) for p in parts]))
    ds.close()
    assert sorted(s for s in closed if s) == sorted(str(p.resolve()) for p in parts)


# ---------------------------------------------------------------- time decoding


def test_months_since_decodes_to_the_first_of_each_month(tmp_path):
    path = _write(tmp_path / "m.nc", _values(14), np.arange(14), "months since 1958-1-1")
    ds = sources.open_field("tos", _spec(path))
    years, months, days = timeaxis.date_fields(ds["time"].values)
    assert list(zip(years, months, days)) == [(1958 + k // 12, k % 12 + 1, 1) for k in range(14)]
    assert ds["time"].values.dtype.kind == "M"
    np.testing.assert_array_equal(ds["field"].values, _values(14))


def test_time_units_and_calendar_overrides(tmp_path):
    wrong = _write(tmp_path / "wrong.nc", _values(3), [0, 1, 13], "days since 1800-01-01")
    ds = sources.open_field("tos", _spec(wrong, time_units="months since 1958-01-01"))
    assert [str(d)[:10] for d in ds["time"].values.astype("datetime64[D]")] == ["1958-01-01", "1958-02-01", "1959-02-01"]

    mislabelled = _write(tmp_path / "cal.nc", _values(5), [0, 30, 60, 359, 360], "days since 2000-01-01", "standard")
    ds = sources.open_field("tos", _spec(mislabelled, calendar="360_day"))
    assert list(ds["time"].values) == [cftime.Datetime360Day(*ymd) for ymd in
                                       [(2000, 1, 1), (2000, 2, 1), (2000, 3, 1), (2000, 12, 30), (2001, 1, 1)]]
    ds = sources.open_field("tos", _spec(mislabelled, calendar="noleap", time_units="days since 2001-01-01"))
    assert list(ds["time"].values) == [cftime.DatetimeNoLeap(*ymd) for ymd in
                                       [(2001, 1, 1), (2001, 1, 31), (2001, 3, 2), (2001, 12, 26), (2001, 12, 27)]]
    leap = _write(tmp_path / "leap.nc", _values(3), [0, 59, 365], "days since 2000-01-01", "noleap")
    ds = sources.open_field("tos", _spec(leap))
    assert list(ds["time"].values) == [cftime.DatetimeNoLeap(*ymd) for ymd in [(2000, 1, 1), (2000, 3, 1), (2001, 1, 1)]]


@pytest.mark.parametrize(
    ("calendar", "dates"),
    [
        ("standard", [(1999, 12, 31), (2000, 2, 29), (2000, 3, 1), (2100, 3, 1)]),
        ("proleptic_gregorian", [(1500, 2, 28), (1600, 2, 29), (2000, 2, 29), (2001, 1, 1)]),
        ("noleap", [(1999, 2, 28), (2000, 2, 28), (2000, 3, 1), (2001, 12, 31)]),
        ("all_leap", [(1999, 2, 29), (2001, 2, 29), (2001, 3, 1), (2003, 12, 31)]),
        ("360_day", [(2000, 2, 29), (2000, 2, 30), (2001, 12, 30), (2002, 1, 1)]),
    ],
)
def test_every_calendar_round_trips(tmp_path, calendar, dates):
    stamps = [cftime.datetime(*ymd, 12, calendar=calendar) for ymd in dates]
    raw = cftime.date2num(stamps, "hours since 1970-01-01", calendar=calendar)
    path = _write(tmp_path / "c.nc", _values(len(dates)), raw, "hours since 1970-01-01", calendar)
    time = sources.open_field("tos", _spec(path))["time"].values
    years, months, days = timeaxis.date_fields(time)
    assert list(zip(years, months, days)) == dates
    expected = {"standard": "proleptic_gregorian"}.get(calendar, calendar)  # datetime64 after 1582
    assert timeaxis.calendar_of(time) == expected


def test_unsorted_steps_within_a_file_are_sorted(tmp_path, caplog):
    values = _values(4)
    path = _write(tmp_path / "u.nc", values, [2, 0, 3, 1], "days since 2000-01-01")
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        ds = sources.open_field("tos", _spec(path))
    assert f"field tos: the 4 time steps of {path} are not in order; sorted them" in caplog.messages
    np.testing.assert_array_equal(ds["field"].values, values[[1, 3, 0, 2]])
    np.testing.assert_array_equal(ds["field"].isel(lat=slice(1, 2), time=[0, 3]).values, values[[1, 2], 1:2])
    assert ds["time"].values.astype("datetime64[D]").astype(str).tolist() == [f"2000-01-0{d}" for d in range(1, 5)]


def test_repeated_and_overlapping_steps_name_the_files(tmp_path):
    a = _write(tmp_path / "a.nc", _values(12), np.arange(12), "months since 1850-01-01")
    b = _write(tmp_path / "b.nc", _values(12), np.arange(12), "months since 1850-06-01")
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec([str(b), str(a)]))
    assert str(err.value) == (f"Field 'tos': the time step 1850-06-01 appears more than once, in '{a}' and '{b}'; "
                              "remove the repeated steps (or list each file once in fields.tos.path).")
    c = _write(tmp_path / "c.nc", _values(12), np.arange(12) + 0.5, "months since 1850-06-01")
    with pytest.raises(ValueError, match=r"time ranges of '.*a\.nc' \(1850-01-01 .. 1850-12-01\) and '.*c\.nc' "
                                         r"\(1850-06-16 .. 1851-05-16\) overlap"):
        sources.open_field("tos", _spec([str(c), str(a)]))
    d = _write(tmp_path / "d.nc", _values(3), [0, 1, 1], "days since 1900-01-01")
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(d))
    assert str(err.value) == (f"Field 'tos': the time step 1900-01-02 appears more than once, in '{d}'; remove the "
                              "repeated steps (or list each file once in fields.tos.path).")


# ---------------------------------------------------------------- formats and packing


def test_zarr_formats_2_and_3_read_like_netcdf(tmp_path):
    values = _values(8)
    raw = np.arange(8) * 30.0
    nc = sources.open_field("tos", _spec(_write(tmp_path / "f.nc", values, raw, "days since 1990-01-01", "360_day")))
    for fmt in (2, 3):
        path = _write(tmp_path / f"f{fmt}.zarr", values, raw, "days since 1990-01-01", "360_day", engine=fmt)
        ds = sources.open_field("tos", {"source": "zarr", "path": str(path)})
        np.testing.assert_array_equal(ds["field"].values, values)
        np.testing.assert_array_equal(ds["time"].values, nc["time"].values)
        np.testing.assert_array_equal(ds["field"].isel(lat=slice(3, 5)).values, values[:, 3:5])
        assert list(ds["time"].values[:2]) == [cftime.Datetime360Day(1990, 1, 1), cftime.Datetime360Day(1990, 2, 1)]
    decoded = synthetic.planted_modes(n_time=6, n_lat=N_LAT, n_lon=N_LON)  # datetime64 time, encoded by xarray
    decoded[["field"]].to_zarr(tmp_path / "enc.zarr", zarr_format=3, consolidated=False)
    ds = sources.open_field("f", {"source": "zarr", "path": str(tmp_path / "enc.zarr")})
    np.testing.assert_array_equal(ds["time"].values, decoded["time"].values)
    np.testing.assert_array_equal(ds["field"].values, decoded["field"].values)


@pytest.mark.parametrize("engine", ["h5netcdf", "scipy", 3])
def test_integer_packed_values_decode_to_floats_with_nan_at_the_fill_value(tmp_path, engine):
    values = np.round(_values(4) * 3.0 + 20.0, 2)
    values[1, 2, 3] = np.nan
    encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 20.0, "_FillValue": -32767}
    suffix = ".zarr" if engine == 3 else ".nc"
    path = _write(tmp_path / f"p{suffix}", values, np.arange(4), "days since 2000-01-01", engine=engine,
                  encoding=encoding)
    stored = xr.open_dataset(path, mask_and_scale=False, **({"consolidated": False} if engine == 3 else {}))
    assert stored["tos"].dtype == np.int16
    field = sources.open_field("tos", _spec(path))["field"]
    assert np.issubdtype(field.dtype, np.floating)
    out = field.values
    np.testing.assert_array_equal(np.isnan(out), np.isnan(values))
    np.testing.assert_allclose(out, values, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- axes


def test_aliases_singleton_level_and_descending_latitude(tmp_path):
    truth = synthetic.planted_modes(n_time=8, n_lat=5, n_lon=6)
    src = truth["field"].rename(lat="latitude", lon="longitude").isel(latitude=slice(None, None, -1))
    src = src.expand_dims(level=[850.0], axis=1).to_dataset(name="ta")
    src.to_zarr(tmp_path / "src.zarr", zarr_format=3, consolidated=False)
    ds = sources.open_field("ta", {"source": "zarr", "path": str(tmp_path / "src.zarr")})
    xr.testing.assert_allclose(ds["field"], truth["field"].reset_coords(drop=True), rtol=0, atol=0)
    np.testing.assert_array_equal(ds["field"].isel(lat=slice(1, 3)).values, truth["field"].values[:, 1:3])

    values = _values(3)
    stored = xr.Dataset({"tos": (("longitude", "latitude", "t"), values.transpose(2, 1, 0)[:, ::-1])},
                        coords={"t": ("t", [0, 1, 2], {"units": "days since 2000-01-01"}), "latitude": LAT[::-1],
                                "longitude": LON})
    stored.to_netcdf(tmp_path / "t.nc", engine="scipy")
    ds = sources.open_field("tos", _spec(tmp_path / "t.nc"))
    np.testing.assert_array_equal(ds["lat"].values, LAT)
    np.testing.assert_array_equal(ds["field"].values, values)
    np.testing.assert_array_equal(ds["field"].isel(lat=[4, 0], lon=slice(2, 5)).values, values[:, [4, 0], 2:5])


def test_select_picks_a_level_and_truth_variables_follow(tmp_path):
    field = synthetic.planted_modes(n_time=4, n_lat=3, n_lon=2)["field"]
    field.expand_dims(level=[1.0, 2.0], axis=1).to_dataset(name="v").to_netcdf(tmp_path / "levels.nc")
    with pytest.raises(ValueError, match="extra dimensions \\['level'\\]"):
        sources.open_field("f", _spec(tmp_path / "levels.nc"))
    picked = sources.open_field("f", _spec(tmp_path / "levels.nc", select={"level": 1.0}))
    np.testing.assert_array_equal(picked["field"].values, field.values)

    planted = synthetic.planted_modes(n_time=5, n_lat=4, n_lon=3)
    planted.isel(lat=slice(None, None, -1)).to_netcdf(tmp_path / "planted.nc")
    ds = sources.open_field("f", _spec(tmp_path / "planted.nc", variable="field", units="K"))
    for v in ("true_eof", "true_pc", "land"):
        np.testing.assert_array_equal(ds[v].values, planted[v].values)
    assert ds.attrs["field_units"] == "K"
    syn = sources.open_field("s", {"source": "synthetic", "kind": "modes", "options": {"n_time": 5}})
    assert syn.attrs["source"] == "synthetic" and syn["field"].shape == (5, 20, 36) and "true_pc" in syn


# ---------------------------------------------------------------- one sentence for each bad input


def test_bad_sources_fail_with_one_sentence(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Field 'x': no file matches the pattern '.*/tos_\*\.nc'"):
        sources.open_field("x", _spec(tmp_path / "tos_*.nc"))
    with pytest.raises(FileNotFoundError, match=r"Field 'x': the netcdf source '.*nowhere\.nc' does not exist"):
        sources.open_field("x", _spec(tmp_path / "nowhere.nc"))
    a = _write(tmp_path / "a.nc", _values(2), [0, 1], "days since 2000-01-01")
    with pytest.raises(FileNotFoundError, match=r"the file '.*gone\.nc' listed in fields\.x\.path does not exist"):
        sources.open_field("x", _spec([str(a), str(tmp_path / "gone.nc")]))
    bare = _write(tmp_path / "bare.nc", _values(2), [0, 1], None)
    with pytest.raises(ValueError, match=r"time axis of '.*bare\.nc' has no units; set fields\.x\.time_units"):
        sources.open_field("x", _spec(bare))
    years = sources.open_field("x", _spec(bare, time_units="years since 2000-01-01"))["time"].dt.year.values
    assert years.tolist() == [2000, 2001]
    shifted = _write(tmp_path / "shifted.nc", _values(2), [5, 6], "days since 2000-01-01", lat=LAT + 1.0)
    with pytest.raises(ValueError, match=r"the lat coordinates of '.*shifted\.nc' differ from those of '.*a\.nc'"):
        sources.open_field("x", _spec([str(a), str(shifted)]))
    other = _write(tmp_path / "other.nc", _values(2), [5, 6], "days since 2000-01-01", "noleap")
    with pytest.raises(ValueError, match=r"'.*other\.nc' uses calendar 'noleap'.*set fields\.x\.calendar"):
        sources.open_field("x", _spec([str(a), str(other)]))
    with pytest.raises(ValueError, match=r"could not decode the time axis of '.*a\.nc' with units 'fortnights'"):
        sources.open_field("x", _spec(a, time_units="fortnights"))
    with pytest.raises(ValueError, match="variable 'sst' is not in the source"):
        sources.open_field("x", _spec(a, variable="sst"))
    (tmp_path / "junk.nc").write_text("not a netCDF file")
    with pytest.raises(ValueError, match=r"could not read '.*junk\.nc' as a netCDF file"):
        sources.open_field("x", _spec(tmp_path / "junk.nc"))
    with pytest.raises(ValueError, match="source must be one of"):
        sources.open_field("x", {"source": "ftp", "path": str(a)})
    nolat = xr.Dataset({"v": (("time", "y", "x"), np.ones((2, 3, 2)))},
                       coords={"time": ("time", [0, 1], {"units": "days since 2000-01-01"})})
    nolat.to_netcdf(tmp_path / "nolat.nc")
    with pytest.raises(ValueError, match="has no lat dimension"):
        sources.open_field("x", _spec(tmp_path / "nolat.nc"))


def test_embedded_files_read_as_before():
    from pathlib import Path

    resources = Path(__file__).resolve().parents[1] / "resources"
    ds = sources.open_field("z500", _spec(resources / "hgt_djf.nc", variable="z"))
    raw = xr.open_dataset(resources / "hgt_djf.nc")["z"].isel(pressure=0).sortby("latitude")
    assert ds["field"].shape == (65, 29, 49) and np.all(np.diff(ds["lat"].values) > 0)
    np.testing.assert_array_equal(ds["field"].values, raw.values)
    np.testing.assert_array_equal(ds["time"].values, raw["time"].values)
    ds.close()


# ---------------------------------------------------------------- coordinates: checked, longitudes made one run


def _opened(path, caplog, **extra):
    """The field of ``path`` read whole, and the log lines of pipeline.sources while opening and reading it."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.sources"):
        ds = sources.open_field("tos", _spec(path, **extra))
        ds = ds.load()
    return ds, list(caplog.messages)


@pytest.mark.parametrize(("axis", "position"), [("time", 1), ("lat", 2), ("lon", 4)])
def test_nan_in_a_coordinate_names_the_axis_and_the_file(tmp_path, axis, position):
    time = np.arange(3.0)
    lat, lon = LAT.copy(), LON.copy()
    {"time": time, "lat": lat, "lon": lon}[axis][position] = np.nan
    path = _write(tmp_path / "nan.nc", _values(3), time, "days since 2000-01-01", lat=lat, lon=lon)
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path))
    row = {"time": "time step", "lat": "latitude row", "lon": "longitude column"}[axis]
    size = {"time": 3, "lat": N_LAT, "lon": N_LON}[axis]
    assert str(err.value) == (f"Field 'tos': the {axis} coordinate of '{path}' is NaN at position {position} of "
                              f"{size}; give that {row} its value in the source, or remove it.")


def test_latitudes_beyond_90_name_the_value_and_the_file(tmp_path):
    colatitude = np.linspace(0.0, 180.0, N_LAT)
    path = _write(tmp_path / "colat.nc", _values(2), [0, 1], "days since 2000-01-01", lat=colatitude)
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path))
    assert str(err.value) == (f"Field 'tos': the lat coordinate of '{path}' holds 180.0, outside [-90, 90]; latitudes "
                              "must be degrees north, so check the source's lat axis (lat and lon swapped?).")


@pytest.mark.parametrize(("axis", "coords", "value", "row"), [
    ("lat", {"lat": np.array([-40.0, -20.0, 0.0, 0.0, 40.0])}, "0.0", "latitude rows"),
    ("lon", {"lon": np.array([0.0, 60.0, 120.0, 180.0, 240.0, 60.0])}, "60.0", "longitude columns"),
])
def test_a_repeated_latitude_or_longitude_is_an_error(tmp_path, axis, coords, value, row):
    path = _write(tmp_path / "rep.nc", _values(2), [0, 1], "days since 2000-01-01", **coords)
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path))
    assert str(err.value) == (f"Field 'tos': the {axis} coordinate of '{path}' holds {value} twice; each {axis} value "
                              f"must appear once, so remove the repeated {row} from the source.")


def test_one_meridian_stored_twice_as_0_and_360_is_an_error(tmp_path):
    lon = np.array([0.0, 72.0, 144.0, 216.0, 288.0, 360.0])  # a cyclic point: column 0 repeated
    path = _write(tmp_path / "cyclic.nc", _values(2), [0, 1], "days since 2000-01-01", lon=lon)
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path))
    assert str(err.value) == (f"Field 'tos': the lon coordinate of '{path}' holds 0.0 and 360.0, the same meridian, "
                              "so it cannot be made one increasing run; remove one of the two longitude columns from "
                              "the source.")


def test_a_date_line_wrap_is_rolled_into_one_run_equal_to_the_same_data_on_170_to_195(tmp_path, caplog):
    values = _values(4)
    straight = np.arange(170.0, 200.0, 5.0)  # 170 .. 195
    wrapped = np.where(straight >= 180.0, straight - 360.0, straight)  # 170, 175, -180, -175, -170, -165
    a = _write(tmp_path / "wrapped.nc", values, np.arange(4), "days since 2000-01-01", lon=wrapped)
    b = _write(tmp_path / "straight.nc", values, np.arange(4), "days since 2000-01-01", lon=straight)
    rolled, log_a = _opened(a, caplog)
    clean, log_b = _opened(b, caplog)
    xr.testing.assert_identical(rolled["field"], clean["field"])
    np.testing.assert_array_equal(rolled["lon"].values, straight)
    lazy = sources.open_field("tos", _spec(a))["field"]
    np.testing.assert_array_equal(lazy.isel(lon=slice(1, 4), lat=[3, 1]).values, values[:, [3, 1], 1:4])
    assert log_a == [f"field tos: the longitudes of '{a}', stored 170.0 .. -165.0, are read as one increasing run "
                     "170.0 .. 195.0 (in stored order, values moved by whole turns of 360)"]
    assert log_b == []


def test_longitudes_in_360_to_720_are_brought_back_by_one_turn(tmp_path, caplog):
    values = _values(2)
    shifted = _write(tmp_path / "shifted.nc", values, [0, 1], "days since 2000-01-01", lon=LON + 360.0)
    plain = _write(tmp_path / "plain.nc", values, [0, 1], "days since 2000-01-01")
    ds, messages = _opened(shifted, caplog)
    xr.testing.assert_identical(ds["field"], _opened(plain, caplog)[0]["field"])
    np.testing.assert_array_equal(ds["lon"].values, LON)
    assert messages == [f"field tos: the longitudes of '{shifted}', stored 360.0 .. 660.0, are read as one increasing "
                        "run 0.0 .. 300.0 (in stored order, values moved by whole turns of 360)"]


@pytest.mark.parametrize("lon", [LON, LON - 180.0, np.array([-180.0, -175.0, -170.0, 170.0, 175.0, 179.5])])
def test_monotonic_longitudes_stay_as_stored(tmp_path, caplog, lon):
    values = _values(2)
    ds, messages = _opened(_write(tmp_path / "g.nc", values, [0, 1], "days since 2000-01-01", lon=lon), caplog)
    np.testing.assert_array_equal(ds["lon"].values, lon)
    np.testing.assert_array_equal(ds["field"].values, values)
    assert messages == []


@pytest.mark.parametrize(("order", "how"), [([5, 4, 3, 2, 1, 0], "reversed"), ([3, 0, 5, 1, 4, 2], "sorted")])
def test_descending_or_shuffled_longitudes_are_put_in_order(tmp_path, caplog, order, how):
    values = _values(2)
    path = _write(tmp_path / "o.nc", values[:, :, order], [0, 1], "days since 2000-01-01", lon=LON[order])
    ds, messages = _opened(path, caplog)
    np.testing.assert_array_equal(ds["lon"].values, LON)
    np.testing.assert_array_equal(ds["field"].values, values)
    assert messages == [f"field tos: the longitudes of '{path}', stored {LON[order[0]]:.1f} .. {LON[order[-1]]:.1f}, "
                        f"are read as one increasing run 0.0 .. 300.0 ({how})"]


# ---------------------------------------------------------------- select: exact, or nearest within a tolerance


@pytest.fixture
def levels(tmp_path):
    """A file with a level axis [1000, 500, 250] (hPa); level k holds values + 100 k."""
    values = _values(3)
    stack = np.stack([values + 100.0 * k for k in range(3)], axis=1)
    ds = xr.Dataset({"ta": (("time", "level", "lat", "lon"), stack, {"units": "K"})},
                    coords={"time": ("time", [0.0, 1.0, 2.0], {"units": "days since 2000-01-01"}),
                            "level": [1000.0, 500.0, 250.0], "lat": LAT, "lon": LON})
    ds.to_netcdf(tmp_path / "levels.nc")
    return tmp_path / "levels.nc", values


def test_select_an_exact_value_records_it(levels, caplog):
    path, values = levels
    ds, messages = _opened(path, caplog, select={"level": 500})
    np.testing.assert_array_equal(ds["field"].values, values + 100.0)
    assert ds["field"].attrs["selected"] == "level=500.0"
    assert messages == ["field tos: selected level=500.0"]


def test_select_a_value_not_in_the_coordinate_lists_the_nearest(levels):
    path, _ = levels
    for asked, nearest in ((850, "the nearest are 500.0 and 1000.0"), (1013.25, "the nearest is 1000.0")):
        with pytest.raises(ValueError) as err:
            sources.open_field("tos", _spec(path, select={"level": asked}))
        assert str(err.value) == (f"Field 'tos': level={asked} of fields.tos.select is not a value of 'level' in "
                                  f"'{path}'; {nearest}; select one of them, or set fields.tos.select_tolerance to "
                                  "take the nearest value within that distance.")


@pytest.mark.parametrize("tolerance", [200, {"level": 200.0}])
def test_select_tolerance_takes_the_nearest_and_records_the_value_used(levels, caplog, tolerance):
    path, values = levels
    ds, messages = _opened(path, caplog, select={"level": 850}, select_tolerance=tolerance)
    np.testing.assert_array_equal(ds["field"].values, values)  # level 1000, the nearest to 850
    assert ds["field"].attrs["selected"] == "level=1000.0"
    assert messages == ["field tos: select level=850 is not in the level coordinate; used level=1000.0, the nearest "
                        "within select_tolerance 200.0"]


def test_select_tolerance_too_small_or_naming_another_axis_is_an_error(levels):
    path, _ = levels
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path, select={"level": 850}, select_tolerance=100))
    assert str(err.value) == (f"Field 'tos': level=850 of fields.tos.select is not a value of 'level' in '{path}'; the "
                              "nearest are 500.0 and 1000.0 (more than select_tolerance 100.0 away); select one of "
                              "them, or set fields.tos.select_tolerance to take the nearest value within that "
                              "distance.")
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path, select={"level": 850}, select_tolerance={"plev": 200}))
    assert str(err.value) == ("Field 'tos': select_tolerance names 'plev', which fields.tos.select does not pick; name "
                              "only axes of select (level).")


def test_select_matches_a_float32_coordinate_exactly(tmp_path):
    values = _values(2)
    ds = xr.Dataset({"ta": (("time", "sigma", "lat", "lon"), np.stack([values, values + 1.0], axis=1))},
                    coords={"time": ("time", [0.0, 1.0], {"units": "days since 2000-01-01"}),
                            "sigma": np.array([0.1, 0.2], dtype=np.float32), "lat": LAT, "lon": LON})
    ds.to_netcdf(tmp_path / "sigma.nc")
    picked = sources.open_field("tos", _spec(tmp_path / "sigma.nc", select={"sigma": 0.2}))
    np.testing.assert_array_equal(picked["field"].values, values + 1.0)
    assert picked["field"].attrs["selected"] == "sigma=0.2"


# ---------------------------------------------------------------- values: inf is an error or, if asked, missing


def test_the_earliest_infinite_value_is_named_with_its_date_and_cell(tmp_path):
    values = _values(4)
    values[3, 1, 1] = -np.inf
    values[2, 4, 5] = np.inf  # earlier date, later cell: named first
    path = _write(tmp_path / "inf.nc", values, np.arange(4), "days since 2000-01-01")
    ds = sources.open_field("tos", _spec(path))
    with pytest.raises(ValueError) as err:
        ds["field"].values
    assert str(err.value) == (f"Field 'tos': variable 'tos' of '{path}' is inf at 2000-01-03, lat 40.0, lon 300.0 "
                              "(the first of 2 infinite values read); replace them with NaN in the source, or set "
                              "fields.tos.nonfinite: mask to read them as missing.")
    np.testing.assert_array_equal(ds["field"].isel(time=[0, 1]).values, values[:2])  # the rest reads


def test_nonfinite_must_be_error_or_mask(tmp_path):
    path = _write(tmp_path / "a.nc", _values(2), [0, 1], "days since 2000-01-01")
    with pytest.raises(ValueError) as err:
        sources.open_field("tos", _spec(path, nonfinite="zero"))
    assert str(err.value) == "Field 'tos': nonfinite must be one of error, mask; got 'zero'."
