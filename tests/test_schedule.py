"""The learning-rate shapes at known steps: the report's three-phase one-cycle beside today's."""

import pytest

from ablate.config import ConfigError, ScheduleCfg, config_hash, from_dict
from ablate.optim import lr_factor

TOTAL, PER_EPOCH = 200, 10


def factors(cfg: ScheduleCfg) -> list[float]:
    return [lr_factor(cfg, s, TOTAL, PER_EPOCH) for s in range(TOTAL + 1)]


def test_onecycle3_goes_up_back_to_the_start_then_down_to_final_frac():
    cfg = from_dict({"schedule": {"name": "onecycle3", "peak_at": 0.2, "final_frac": 0.0}}).schedule
    assert cfg.start_frac == 0.04  # torch's OneCycleLR div_factor=25
    f = factors(cfg)
    assert f[0] == pytest.approx(0.04)
    assert f[20] == pytest.approx(0.04 + 0.96 * 0.5)  # halfway up
    assert f[40] == pytest.approx(1.0) and max(f) == f[40]  # the peak at peak_at
    assert f[60] == pytest.approx(0.04 + 0.96 * 0.5)  # halfway back, as fast as it rose
    assert f[80] == pytest.approx(0.04)  # back at the start at 2 x peak_at
    assert f[140] == pytest.approx(0.02)  # halfway through the third phase
    assert f[TOTAL] == pytest.approx(0.0)
    third = f[80:]
    assert all(a > b for a, b in zip(third, third[1:]))  # decays all the way


def test_onecycle3_takes_its_start_and_final_levels_from_the_config():
    cfg = ScheduleCfg(name="onecycle3", peak_at=0.25, start_frac=0.1, final_frac=0.01)
    f = factors(cfg)
    assert (f[0], f[50], f[100], f[TOTAL]) == pytest.approx((0.1, 1.0, 0.1, 0.01))


def test_onecycle_is_unchanged():
    # Linear up to the peak, linear straight down to final_frac: no second phase, no start level.
    f = factors(ScheduleCfg(name="onecycle", peak_at=0.25, final_frac=0.1, start_frac=0.5))
    assert (f[0], f[25], f[50], f[125], f[TOTAL]) == pytest.approx((0.0, 0.5, 1.0, 0.55, 0.1))


@pytest.mark.parametrize("where", ["schedule", "switch.schedule"])
def test_onecycle3_refuses_a_peak_it_cannot_come_back_from(where):
    def cfg(peak_at):
        sched = {"name": "onecycle3", "peak_at": peak_at}
        d = {"schedule": sched} if where == "schedule" else {"epochs": 4, "switch": {"at_epoch": 2, "schedule": sched}}
        return from_dict(d)

    cfg(0.49)
    with pytest.raises(ConfigError, match=rf"^{where}\.peak_at must be below 0\.5 for {where}\.name") as e:
        cfg(0.5)
    assert "\n" not in str(e.value)
    from_dict({"schedule": {"name": "onecycle", "peak_at": 0.5}})  # only onecycle3 needs it


def test_start_frac_is_range_checked_and_left_out_of_the_hash_at_its_default():
    with pytest.raises(ConfigError, match=r"schedule.start_frac must be in \[0.0, 1.0\]"):
        from_dict({"schedule": {"start_frac": 1.5}})
    base = config_hash(from_dict({}))
    assert config_hash(from_dict({"schedule": {"start_frac": 0.04}})) == base
    assert config_hash(from_dict({"schedule": {"start_frac": 0.1}})) != base
    assert config_hash(from_dict({"switch": {"schedule": {"start_frac": 0.1}}})) != base


def test_linear_falls_in_a_straight_line_from_1_to_final_frac():
    # airbench94_muon's lr = initial x (1 - step / total), step 0-based: final_frac 0.
    assert factors(ScheduleCfg(name="linear")) == pytest.approx([1 - s / TOTAL for s in range(TOTAL + 1)])
    f = factors(ScheduleCfg(name="linear", final_frac=0.2, peak_at=0.5, warmup_epochs=3))
    assert (f[0], f[100], f[TOTAL]) == pytest.approx((1.0, 0.6, 0.2))  # no warmup, no peak: a line
    assert from_dict({"schedule": {"name": "linear"}}).schedule.name == "linear"
    with pytest.raises(ConfigError, match="schedule.name must be one of .*linear, got 'linea'"):
        from_dict({"schedule": {"name": "linea"}})
