"""Protocol files are checked for meaning, not only for shape: each rule refuses a broken copy
of the shipped protocol with the step's name and the reason; a doubtful choice is a warning.
Through `load_protocol` and the real `aftercare check-protocol` command."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from messages.protocol import (
    ProtocolError,
    default_protocol_path,
    load_protocol,
    missing_translations,
    warnings_of,
)
from messages.render import Catalog, catalog
from messages.texts import Reader
from tests.procs import aftercare


def broken(tmp_path: Path, old: str, new: str) -> Path:
    source = default_protocol_path().read_text(encoding="utf-8")
    assert source.count(old) == 1, old
    path = tmp_path / "clinic.toml"
    path.write_text(source.replace(old, new), encoding="utf-8")
    return path


RULES = [
    # "Pools, saunas and sun allowed again" four days before the session.
    (
        'phase = "after"\nwhen = "end+7d"',
        'phase = "after"\nwhen = "end-7d"',
        "step 'after-7d': says 'heat_sun' is allowed again, but is planned at end-7d, "
        "before it ends (end+7d)",
    ),
    # A window that closes before it opens.
    (
        'expires = "end+2d"',
        'expires = "end+12h"',
        "step 'after-24h': expires (end+12h) is not after when (end+24h)",
    ),
    # "Your session is soon" two hours after it ended.
    (
        'phase = "before"\nwhen = "start-2h"',
        'phase = "before"\nwhen = "end+2h"',
        "step 'prep-2h': pre-care, but planned after the session starts (end+2h)",
    ),
    # No pools or sun "until" a week before the session ends: never in force.
    (
        'until = "end+7d"',
        'until = "end-7d"',
        "restriction 'heat_sun': ends (end-7d) before it begins (end)",
    ),
    # The aftercare checklist before the session.
    (
        'phase = "after"\nwhen = "end"',
        'phase = "after"\nwhen = "start-1h"',
        "step 'after-0': aftercare, but planned before the session ends (start-1h)",
    ),
    # "You can wash your hair again" a day before washing is allowed.
    (
        'until = "end+24h"',
        'until = "end+48h"',
        "step 'after-24h': says 'wash' is allowed again, but is planned at end+24h, "
        "before it ends (end+48h)",
    ),
]


@pytest.mark.parametrize(("old", "new", "reason"), RULES)
def test_a_protocol_that_would_tell_patients_wrong_things_is_refused(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        load_protocol(broken(tmp_path, old, new))
    assert f"clinic.toml: {reason}" in str(caught.value)


def test_an_allowed_again_early_is_fine_when_the_text_says_from_when() -> None:
    # after-3d goes at 10:00 on day 3 while alcohol ends at the session's time of day:
    # accepted because its text states {until_alcohol}; without it, refused.
    en = catalog("en")
    texts = {key: en.raw(key) for key in en}
    load_protocol(default_protocol_path(), texts=Catalog("en", texts))
    texts["step.after-3d"] = "Alcohol is fine again. How is your scalp today?"
    with pytest.raises(ProtocolError, match="step 'after-3d': says 'alcohol' is allowed again"):
        load_protocol(default_protocol_path(), texts=Catalog("en", texts))


def test_a_text_missing_in_a_language_is_named() -> None:
    protocol = load_protocol(default_protocol_path())
    en = catalog("en")
    partial = Catalog("ml", {k: en.raw(k) for k in en if k != "step.after-7d"})
    assert missing_translations(protocol, [partial]) == [
        "step 'after-7d': text: no text 'step.after-7d' in the ml catalog"
    ]
    assert missing_translations(protocol) == []  # every shipped language is complete


def test_a_local_time_inside_the_default_quiet_hours_is_a_warning(tmp_path: Path) -> None:
    path = broken(tmp_path, 'when = "start-1d@18:00"', 'when = "start-1d@23:00"')
    warnings = warnings_of(load_protocol(path))
    assert warnings == [
        "step 'prep-1d': 23:00 is inside the default quiet hours (22:00-08:00), "
        "so it will usually move"
    ]
    assert warnings_of(load_protocol(default_protocol_path())) == []


def test_check_protocol_prints_the_timeline_and_the_restrictions() -> None:
    done = aftercare("check-protocol", str(default_protocol_path()))
    assert done.returncode == 0, done.stderr
    assert "after-7d" in done.stdout
    assert "heat_sun         after   Thu 26 Nov, 15:15  Thu 3 Dec, 15:15" in done.stdout
    assert done.stderr == ""


def test_check_protocol_refuses_with_every_reason_and_warns_without_failing(
    tmp_path: Path,
) -> None:
    wrong = broken(tmp_path, 'until = "end+7d"', 'until = "end-7d"')
    refused = aftercare("check-protocol", str(wrong))
    doubtful = broken(tmp_path, 'when = "start-1d@18:00"', 'when = "start-1d@23:00"')
    warned = aftercare("check-protocol", str(doubtful))

    assert refused.returncode == 1 and refused.stdout == ""
    assert "aftercare: clinic.toml: restriction 'heat_sun': ends (end-7d)" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert warned.returncode == 0 and "prep-1d" in warned.stdout
    assert warned.stderr.startswith("warning: clinic.toml: step 'prep-1d': 23:00 is inside")


OUR_PREP = """
[texts.en.step]
our-prep-1d = "Tomorrow, {start}: please come with clean hair and bring your medicines list."
"""
OUR_PREP_ML = """
[texts.ml.step]
our-prep-1d = "നാളെ, {start}: ദയവായി വൃത്തിയുള്ള മുടിയുമായി വരിക, താങ്കൾ കഴിക്കുന്ന മരുന്നുകളുടെ ലിസ്റ്റ് കൊണ്ടുവരിക."
"""


def clinic_file(tmp_path: Path, *tables: str) -> Path:
    """The shipped protocol as a clinic's own: English and Malayalam only, and prep-1d with
    a text of its own."""
    text = (
        default_protocol_path()
        .read_text("utf-8")
        .replace('key = "prep-1d"\n', 'key = "prep-1d"\ntext = "step.our-prep-1d"\n')
    )
    path = tmp_path / "kochi.toml"
    path.write_text('languages = ["en", "ml"]\n' + text + "".join(tables), "utf-8")
    return path


def test_a_clinic_text_missing_in_a_language_it_enables_is_reported(tmp_path: Path) -> None:
    result = aftercare("check-protocol", str(clinic_file(tmp_path, OUR_PREP)), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "aftercare: kochi.toml: step 'prep-1d': text: no text 'step.our-prep-1d' in the ml "
        "catalog: add it under [texts.ml]"
    ]


def test_a_clinic_speaks_its_languages_with_its_own_texts(tmp_path: Path) -> None:
    path = clinic_file(tmp_path, OUR_PREP, OUR_PREP_ML)
    assert aftercare("check-protocol", str(path), cwd=tmp_path).returncode == 0
    protocol = load_protocol(path)
    assert protocol.enabled_languages == ("en", "ml")
    ml = Reader.of("ml", ZoneInfo("Asia/Kolkata"), protocol)
    assert ml.t("step.our-prep-1d", start="x").startswith("നാളെ, x: ദയവായി")
    assert ml.t("step.prep-3d", start="x") == catalog("ml").text("step.prep-3d", start="x")
    # Persian is not one of the clinic's languages: its first one answers.
    assert Reader.of("fa", ZoneInfo("Asia/Tehran"), protocol).lang == "en"
    assert Reader.of("fa", ZoneInfo("Asia/Tehran"), protocol).t("step.our-prep-1d", start="x") == (
        "Tomorrow, x: please come with clean hair and bring your medicines list."
    )


def test_a_language_without_a_catalog_is_refused(tmp_path: Path) -> None:
    path = clinic_file(tmp_path, OUR_PREP).read_text("utf-8").replace('"ml"]', '"de"]', 1)
    (tmp_path / "kochi.toml").write_text(path, "utf-8")
    with pytest.raises(ProtocolError, match=r"kochi.toml: languages: 'de' has no catalog"):
        load_protocol(tmp_path / "kochi.toml")
