"""The Figure 1a driver ``lightning-sdc gradn-curve``: a tiny DSA run on digits, with and without
SDC, writes both curves (npz) and the plot (png)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lightning_sdc import gradn_curve as curve
from lightning_sdc.cli import UsageError
from lightning_sdc.cli import run as cli_run

DIGITS_DSA = curve.CONFIGS / "demo" / "digits_dsa_ipc1.yaml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("curve")
    kwargs = dict(run_config=str(DIGITS_DSA), steps=3, every=1, num_networks=2, sdc_lambda=1.0,
                  out=str(tmp / "fig" / "gradn_curve"), workdir=str(tmp / "work"))
    return tmp, curve.gradn_curve_command(**kwargs)


def test_curve_driver_writes_both_curves_and_the_plot(tiny):
    tmp, written = tiny
    png, npz = tmp / "fig" / "gradn_curve.png", tmp / "fig" / "gradn_curve.npz"
    assert written == [str(npz), str(png), str(tmp / "work" / "summary.txt")]
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(npz)
    for run in curve.RUNS:
        assert data[f"steps_{run}"].tolist() == [0, 1, 2, 3]  # start, every step, and the last step
        for key in ("gradn", "ema"):
            values = data[f"{key}_{run}"]
            assert values.shape == (4,) and np.isfinite(values).all() and (values > 0).all()
        # the in-loop norm of the matching networks is recorded at every update
        assert data[f"inloop_steps_{run}"].tolist() == [1, 2, 3]
        assert np.isfinite(data[f"inloop_{run}"]).all() and (data[f"inloop_{run}"] > 0).all()
    assert float(data["sdc_lambda"]) == 1.0
    assert json.loads(str(data["settings"]))["source"] == "init"  # GM: fresh initialisations
    # same seed, same start; the SDC term changes the synthetic set, so the curves part after step 0
    assert data["gradn_base"][0] == pytest.approx(data["gradn_sdc"][0], rel=1e-6)
    assert not np.allclose(data["gradn_base"][1:], data["gradn_sdc"][1:], rtol=1e-7, atol=0)
    assert (tmp / "work" / "base" / "gradn.csv").is_file() and (tmp / "work" / "summary.txt").is_file()
    assert (tmp / "work" / "summary.txt").read_text().startswith("DSA λ=0: GraDN step 0")


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--sdc_lambda", "0"], "--sdc_lambda must be a finite number > 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--run_config", "no/such.yaml"], "--run_config no/such.yaml: no such file"),
        (["--source", "nope"], "--source 'nope': allowed: auto"),
    ],
)
def test_curve_driver_rejects_bad_arguments_before_running(argv, match):
    with pytest.raises(UsageError, match=match):
        cli_run(["gradn-curve", *argv])
