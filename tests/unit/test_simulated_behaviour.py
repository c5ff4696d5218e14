"""The simulated processor's pure decisions: tokens, fees, latency, rate cap, outages, configuration, signatures."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from adapters.base import EventType, RefundStatus, WebhookPayloadError, WebhookSignatureError
from adapters.simulated import webhooks
from adapters.simulated.config import ENVIRONMENT, OutageWindow, SimulatedConfig, SimulatedConfigError, environment_name
from adapters.simulated.faults import LatencyModel, outage_end_epoch_s
from adapters.simulated.fees import processing_fee_minor
from adapters.simulated.record import ChargeRecordStatus
from adapters.simulated.tokens import PlanKind, plan_charge
from ledger.money import Money

QUIET = SimulatedConfig()

# ---- tokens ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["pm_card_visa", "pm_card_mastercard", "pm_card_amex", "pm_card_discover", "pm_card_us", "pm_card_visa_debit"],
)
def test_succeeding_cards_are_recorded_as_succeeded(token: str) -> None:
    plan = plan_charge(token, 1000, QUIET, random.Random(1))
    assert (plan.kind, plan.status, plan.decline_code, plan.hang) == (
        PlanKind.RECORD,
        ChargeRecordStatus.SUCCEEDED,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedLostCard", "lost_card"),
        ("pm_card_chargeDeclinedStolenCard", "stolen_card"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("pm_card_chargeDeclinedProcessingError", "processing_error"),
        ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
    ],
)
def test_declining_cards_are_recorded_with_their_decline_code(token: str, decline_code: str) -> None:
    plan = plan_charge(token, 1000, QUIET, random.Random(1))
    assert (plan.kind, plan.status, plan.decline_code) == (PlanKind.RECORD, ChargeRecordStatus.DECLINED, decline_code)
    assert plan.message


@pytest.mark.parametrize("token", ["pm_card_authenticationRequired", "pm_card_threeDSecureRequired"])
def test_authentication_cards_wait_for_action(token: str) -> None:
    plan = plan_charge(token, 1000, QUIET, random.Random(1))
    assert (plan.kind, plan.status) == (PlanKind.RECORD, ChargeRecordStatus.REQUIRES_ACTION)
    assert plan.message is not None and "requires_action" in plan.message


def test_simulator_timeout_tokens() -> None:
    charged = plan_charge("pm_sim_timeout_charged", 1000, QUIET, random.Random(1))
    lost = plan_charge("pm_sim_timeout_lost", 1000, QUIET, random.Random(1))
    assert (charged.kind, charged.status, charged.hang) == (PlanKind.RECORD, ChargeRecordStatus.SUCCEEDED, True)
    assert (lost.kind, lost.status, lost.hang) == (PlanKind.LOSE, None, True)


@pytest.mark.parametrize("token", ["pm_card_nonexistent", "tok_visa", "4242424242424242", "", "PM_CARD_VISA"])
def test_unknown_tokens_fail_without_a_record(token: str) -> None:
    plan = plan_charge(token, 1000, QUIET, random.Random(1))
    assert (plan.kind, plan.decline_code) == (PlanKind.INVALID, "invalid_payment_method")


@pytest.mark.parametrize("amount_minor", [0, -1])
def test_amounts_below_one_fail(amount_minor: int) -> None:
    plan = plan_charge("pm_card_visa", amount_minor, QUIET, random.Random(1))
    assert (plan.kind, plan.decline_code) == (PlanKind.INVALID, "amount_too_small")


def test_random_declines_fall_on_succeeding_cards_at_the_configured_rate() -> None:
    config = SimulatedConfig(decline_rate=0.1, seed=3)
    rng = random.Random(config.seed)
    plans = [plan_charge("pm_card_visa", 1000, config, rng) for _ in range(20_000)]
    declined = [p for p in plans if p.status is ChargeRecordStatus.DECLINED]
    assert 0.09 <= len(declined) / len(plans) <= 0.11
    assert {p.decline_code for p in declined} == {"generic_decline", "insufficient_funds", "do_not_honor"}
    # A card that declines anyway keeps its own reason; one that needs authentication still needs it.
    assert all(
        plan_charge("pm_card_chargeDeclinedLostCard", 1, config, rng).decline_code == "lost_card" for _ in range(200)
    )
    assert all(
        plan_charge("pm_card_authenticationRequired", 1, config, rng).status is ChargeRecordStatus.REQUIRES_ACTION
        for _ in range(200)
    )


def test_random_timeouts_split_between_charged_and_lost() -> None:
    config = SimulatedConfig(timeout_rate=0.2, timeout_charged_fraction=0.25)
    rng = random.Random(11)
    plans = [plan_charge("pm_card_visa", 1000, config, rng) for _ in range(20_000)]
    charged = sum(1 for p in plans if p.hang and p.kind is PlanKind.RECORD)
    lost = sum(1 for p in plans if p.kind is PlanKind.LOSE)
    assert 0.18 <= (charged + lost) / len(plans) <= 0.22
    assert 0.22 <= charged / (charged + lost) <= 0.28


def test_a_quiet_configuration_draws_no_randomness() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    for token in ("pm_card_visa", "pm_card_chargeDeclined", "pm_sim_timeout_lost", "pm_nope"):
        plan_charge(token, 1000, QUIET, rng)
    assert rng.getstate() == state


# ---- fees --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount_minor", "fee_minor"),
    [
        (1000, 52),  # 2.2% of $10.00 = 22c exactly, + 30c
        (5000, 140),  # 110 + 30
        (250, 36),  # 5.5 rounds half up to 6
        (750, 47),  # 16.5 rounds up to 17 (banker's rounding would give 16)
        (2273, 80),  # 50.006 rounds down to 50
        (23, 31),  # 0.506 rounds up to 1
        (22, 30),  # 0.484 rounds down to 0
        (0, 30),
        (10**15, 22 * 10**12 + 30),  # exact where a float would not be
    ],
)
def test_fee_is_two_point_two_percent_plus_thirty_rounded_half_up(amount_minor: int, fee_minor: int) -> None:
    assert processing_fee_minor(amount_minor, 220, 30) == fee_minor


def test_fee_with_other_rates() -> None:
    assert processing_fee_minor(1000, 290, 30) == 59  # Stripe's 2.9% + 30c
    assert processing_fee_minor(1234, 0, 0) == 0
    assert processing_fee_minor(1, 10_000, 0) == 1  # 100%
    with pytest.raises(ValueError):
        processing_fee_minor(-1, 220, 30)


# ---- latency -----------------------------------------------------------------------------------------------------


def test_latency_samples_have_the_configured_median_and_p99() -> None:
    model = LatencyModel(latency_ms_median=250.0, latency_ms_p99=1500.0)
    rng = random.Random(42)
    samples = sorted(model.sample_ms(rng) for _ in range(100_000))
    assert statistics.median(samples) == pytest.approx(250.0, rel=0.03)
    assert samples[int(len(samples) * 0.99)] == pytest.approx(1500.0, rel=0.06)
    assert min(samples) > 0


def test_latency_is_reproducible_with_a_seed_and_can_be_zero_or_constant() -> None:
    model = LatencyModel(100.0, 400.0)
    first = [model.sample_ms(random.Random(9)) for _ in range(3)]
    assert first == [model.sample_ms(random.Random(9)) for _ in range(3)]
    assert all(LatencyModel(0.0, 0.0).sample_ms(random.Random(1)) == 0.0 for _ in range(100))
    assert all(LatencyModel(20.0, 20.0).sample_ms(random.Random(1)) == pytest.approx(20.0) for _ in range(100))


# ---- outages -----------------------------------------------------------------------------------------------------


def test_outage_windows_absolute_and_relative() -> None:
    absolute = OutageWindow(1000.0, 1010.0)
    relative = OutageWindow(5.0, 6.0, relative=True)
    started_s = 2000.0
    windows = (absolute, relative)
    assert outage_end_epoch_s(windows, started_s, 999.9) is None
    assert outage_end_epoch_s(windows, started_s, 1000.0) == 1010.0
    assert outage_end_epoch_s(windows, started_s, 1009.99) == 1010.0
    assert outage_end_epoch_s(windows, started_s, 1010.0) is None  # half-open
    assert outage_end_epoch_s(windows, started_s, 2004.9) is None
    assert outage_end_epoch_s(windows, started_s, 2005.0) == 2006.0
    assert outage_end_epoch_s((), started_s, 2005.0) is None


def test_outage_window_parsing() -> None:
    assert OutageWindow.parse("+10-+20") == OutageWindow(10.0, 20.0, relative=True)
    assert OutageWindow.parse(" 1732700000-1732700060 ") == OutageWindow(1732700000.0, 1732700060.0)
    for bad in ("+10-20", "10", "a-b"):
        with pytest.raises(ValueError):
            OutageWindow.parse(bad)


# ---- configuration -----------------------------------------------------------------------------------------------


def test_default_and_realistic_presets() -> None:
    default = SimulatedConfig()
    assert (default.latency_ms_median, default.charges_per_s_max, default.timeout_rate, default.decline_rate) == (
        0.0,
        None,
        0.0,
        0.0,
    )
    assert (default.fee_rate_bp, default.fee_fixed_minor, default.hang_s) == (220, 30, 30.0)
    realistic = SimulatedConfig.realistic()
    assert (realistic.latency_ms_median, realistic.latency_ms_p99) == (250.0, 1500.0)
    assert (realistic.charges_per_s_max, realistic.timeout_rate) == (100.0, 0.002)
    assert SimulatedConfig.realistic(seed=7).seed == 7


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"latency_ms_median": -1.0}, "SURGE_SIM_LATENCY_MS_MEDIAN"),
        ({"latency_ms_median": 100.0, "latency_ms_p99": 50.0}, "SURGE_SIM_LATENCY_MS_P99"),
        ({"latency_ms_p99": 50.0}, "SURGE_SIM_LATENCY_MS_P99"),
        ({"latency_ms_median": float("nan"), "latency_ms_p99": float("nan")}, "SURGE_SIM_LATENCY_MS_MEDIAN"),
        ({"decline_rate": 1.5}, "SURGE_SIM_DECLINE_RATE"),
        ({"timeout_rate": -0.1}, "SURGE_SIM_TIMEOUT_RATE"),
        ({"timeout_charged_fraction": 2.0}, "SURGE_SIM_TIMEOUT_CHARGED_FRACTION"),
        ({"hang_s": 0.0}, "SURGE_SIM_HANG_S"),
        ({"hang_s": float("inf")}, "SURGE_SIM_HANG_S"),
        ({"outages": (OutageWindow(20.0, 10.0),)}, "SURGE_SIM_OUTAGES"),
        ({"charges_per_s_max": 0.0}, "SURGE_SIM_CHARGES_PER_S_MAX"),
        ({"charges_burst_max": 5}, "SURGE_SIM_CHARGES_BURST_MAX"),
        ({"charges_per_s_max": 10.0, "charges_burst_max": 0}, "SURGE_SIM_CHARGES_BURST_MAX"),
        ({"fee_rate_bp": 10_001}, "SURGE_SIM_FEE_RATE_BP"),
        ({"fee_fixed_minor": -1}, "SURGE_SIM_FEE_FIXED_MINOR"),
        ({"webhook_secret": ""}, "SURGE_SIM_WEBHOOK_SECRET"),
        ({"webhook_tolerance_s": 0}, "SURGE_SIM_WEBHOOK_TOLERANCE_S"),
    ],
)
def test_invalid_settings_are_refused_by_name(overrides: dict[str, object], variable: str) -> None:
    with pytest.raises(SimulatedConfigError, match=variable):
        SimulatedConfig(**overrides)  # type: ignore[arg-type]


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SimulatedConfigError) as raised:
        SimulatedConfig(decline_rate=2.0, fee_rate_bp=-1)
    assert "SURGE_SIM_DECLINE_RATE" in str(raised.value) and "SURGE_SIM_FEE_RATE_BP" in str(raised.value)


def test_configuration_from_the_environment() -> None:
    config = SimulatedConfig.from_environment(
        {
            "SURGE_SIM_LATENCY_MS_MEDIAN": "10",
            "SURGE_SIM_LATENCY_MS_P99": "80.5",
            "SURGE_SIM_DECLINE_RATE": "0.05",
            "SURGE_SIM_OUTAGES": "+30-+45, 1732700000-1732700060",
            "SURGE_SIM_CHARGES_PER_S_MAX": "250",
            "SURGE_SIM_CHARGES_BURST_MAX": "50",
            "SURGE_SIM_FEE_RATE_BP": "290",
            "SURGE_SIM_SEED": "123",
            "SURGE_SIM_HANG_S": "2",
            "SURGE_SIM_WEBHOOK_SECRET": "whsec_test",
            "SURGE_SIM_TIMEOUT_RATE": "",  # empty means unset
            "SURGE_UNRELATED": "x",
        }
    )
    assert config == SimulatedConfig(
        latency_ms_median=10.0,
        latency_ms_p99=80.5,
        decline_rate=0.05,
        outages=(OutageWindow(30.0, 45.0, relative=True), OutageWindow(1732700000.0, 1732700060.0)),
        charges_per_s_max=250.0,
        charges_burst_max=50,
        fee_rate_bp=290,
        seed=123,
        hang_s=2.0,
        webhook_secret="whsec_test",
    )
    assert SimulatedConfig.from_environment({}) == SimulatedConfig()


def test_every_setting_has_an_environment_variable() -> None:
    environment = {environment_name(f.name): "" for f in fields(SimulatedConfig)}
    assert set(environment) | {"SURGE_SIM_PRESET"} == set(ENVIRONMENT.variables.values())


def test_the_realistic_preset_from_the_environment_with_overrides() -> None:
    config = SimulatedConfig.from_environment(
        {"SURGE_SIM_PRESET": "realistic", "SURGE_SIM_CHARGES_PER_S_MAX": "off", "SURGE_SIM_SEED": "1"}
    )
    assert config == SimulatedConfig.realistic(charges_per_s_max=None, seed=1)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"SURGE_SIM_PRESET": "fast"}, "SURGE_SIM_PRESET"),
        ({"SURGE_SIM_DECLINE_RATE": "ten percent"}, "SURGE_SIM_DECLINE_RATE"),
        ({"SURGE_SIM_OUTAGES": "+5-10"}, "SURGE_SIM_OUTAGES"),
        ({"SURGE_SIM_DECLINE_RATE": "3"}, "SURGE_SIM_DECLINE_RATE"),
    ],
)
def test_bad_environment_values_name_their_variable(environment: dict[str, str], message: str) -> None:
    with pytest.raises(SimulatedConfigError, match=message):
        SimulatedConfig.from_environment(environment)


# ---- webhook signatures and payloads -----------------------------------------------------------------------------

SECRET = "whsec_unit"
NOW_S = 1_800_000_000


def _payload(event_type: str, data_object: dict[str, object]) -> bytes:
    return webhooks.event_payload("evt_1", event_type, datetime.fromtimestamp(NOW_S, UTC), data_object)


def test_a_signed_payload_verifies() -> None:
    payload = b'{"id": "evt_1"}'
    headers = webhooks.signed_headers(payload, SECRET, NOW_S)
    webhooks.verify_signature(payload, headers, SECRET, 300, NOW_S + 299)
    lower_case = {name.lower(): value for name, value in headers.items()}
    webhooks.verify_signature(payload, lower_case, SECRET, 300, NOW_S)


def test_a_rotated_secret_verifies_when_one_signature_matches() -> None:
    payload = b"{}"
    old = webhooks.signature(payload, "whsec_old", NOW_S)
    new = webhooks.signature(payload, SECRET, NOW_S)
    header = {webhooks.SIGNATURE_HEADER: f"t={NOW_S},v1={old},v1={new}"}
    webhooks.verify_signature(payload, header, SECRET, 300, NOW_S)


@pytest.mark.parametrize(
    ("header", "now_s"),
    [
        (None, NOW_S),  # missing
        ("garbage", NOW_S),
        (f"t={NOW_S}", NOW_S),  # no signature
        (f"t=soon,v1={'0' * 64}", NOW_S),
        (f"t={NOW_S},v1={'0' * 64}", NOW_S),  # forged
        ("signed-by-another-secret", NOW_S),
        ("signed", NOW_S + 301),  # stale
        ("signed", NOW_S - 301),  # from the future
        ("tampered", NOW_S),
    ],
)
def test_bad_signatures_are_refused(header: str | None, now_s: int) -> None:
    payload = b'{"id": "evt_1"}'
    if header == "signed":
        header = webhooks.signature_header(payload, SECRET, NOW_S)
    elif header == "signed-by-another-secret":
        header = webhooks.signature_header(payload, "whsec_attacker", NOW_S)
    elif header == "tampered":
        header = webhooks.signature_header(b'{"id": "evt_2"}', SECRET, NOW_S)
    headers = {} if header is None else {webhooks.SIGNATURE_HEADER: header}
    with pytest.raises(WebhookSignatureError):
        webhooks.verify_signature(payload, headers, SECRET, 300, now_s)


def test_events_map_to_processor_events() -> None:
    dispute = {
        "id": "dp_1",
        "object": "dispute",
        "amount": 1000,
        "currency": "usd",
        "fee": 1500,
        "status": "needs_response",
        "payment_intent": "pi_1",
        "metadata": {"donation_id": "don_1"},
    }
    event = webhooks.parse_event(_payload(webhooks.DISPUTE_CREATED, dispute))
    assert (event.id, event.type, event.processor_reference, event.donation_id, event.object_id) == (
        "evt_1",
        EventType.DISPUTE_CREATED,
        "pi_1",
        "don_1",
        "dp_1",
    )
    assert (event.amount, event.fee) == (Money(1000, "USD"), Money(1500, "USD"))
    assert event.created == datetime.fromtimestamp(NOW_S, UTC)
    closed = {**dispute, "fee": None}
    for status, expected in (("won", EventType.DISPUTE_WON), ("lost", EventType.DISPUTE_LOST)):
        assert webhooks.parse_event(_payload(webhooks.DISPUTE_CLOSED, {**closed, "status": status})).type is expected
    assert webhooks.parse_event(_payload(webhooks.DISPUTE_CLOSED, {**closed, "status": "warning_closed"})).type is (
        EventType.IGNORED
    )
    payout = {"id": "po_1", "object": "payout", "amount": 5, "currency": "eur", "status": "paid"}
    assert webhooks.parse_event(_payload(webhooks.PAYOUT_PAID, payout)).amount == Money(5, "EUR")
    refund = {"id": "re_1", "object": "refund", "amount": 5, "currency": "usd", "payment_intent": "pi_1"}
    refund |= {"status": "succeeded", "metadata": {"surge_refund_id": "re_surge_1"}}
    parsed_refund = webhooks.parse_event(_payload(webhooks.REFUND_CREATED, refund))
    assert (parsed_refund.type, parsed_refund.refund_status, parsed_refund.refund_id) == (
        EventType.REFUND_UPDATED,
        RefundStatus.SUCCEEDED,
        "re_surge_1",
    )
    failed = {"id": "pi_1", "amount": 5, "currency": "usd", "last_payment_error": {"decline_code": "x"}}
    parsed = webhooks.parse_event(_payload(webhooks.PAYMENT_FAILED, failed))
    assert (parsed.type, parsed.decline_code) == (EventType.CHARGE_FAILED, "x")
    assert webhooks.parse_event(_payload("customer.created", {"id": "cus_1"})).type is EventType.IGNORED


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        orjson.dumps({"id": "evt_1", "type": "payout.paid", "created": NOW_S}),  # no data
        _payload(webhooks.PAYOUT_PAID, {"id": "po_1", "amount": 1.5, "currency": "usd"}),  # a float amount
        _payload(webhooks.PAYOUT_PAID, {"id": "po_1", "amount": 1, "currency": "dollars"}),
        _payload(webhooks.PAYOUT_PAID, {"id": "po_1", "amount": True, "currency": "usd"}),
    ],
)
def test_malformed_events_are_payload_errors(payload: bytes) -> None:
    with pytest.raises(WebhookPayloadError):
        webhooks.parse_event(payload)


def test_the_live_fault_control_file_comes_from_the_settings_and_the_build(tmp_path: Path) -> None:
    """SURGE_SIM_FAULT_CONTROL_FILE is read with the other settings, not at import; building the processor hands it
    to the fault checks, which then open the file's outage (no pool is touched by building)."""
    from adapters.simulated import ADAPTER, faults

    control = tmp_path / "control.json"
    now_s = time.time()
    control.write_text(orjson.dumps({"outages": [[now_s - 10, now_s + 3600]]}).decode())
    config = SimulatedConfig.from_environment({faults.CONTROL_FILE_VARIABLE: str(control)})
    assert config.fault_control_file == control
    assert SimulatedConfig.from_environment({}).fault_control_file is None
    try:
        ADAPTER.build("simulated", None, config)
        assert outage_end_epoch_s((), now_s, now_s) == pytest.approx(now_s + 3600)
        ADAPTER.build("simulated", None, SimulatedConfig())
        assert outage_end_epoch_s((), now_s, now_s) is None
    finally:
        faults.use_control_file(None)
