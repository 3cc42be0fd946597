"""What the demo's people are called and type, in each language of the bot
(`aftercare demo --language fa`): their Telegram app speaks it, so the bot answers in it,
and they type dates the way its speakers write them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from messages.calendars import format_pattern


@dataclass(frozen=True)
class Script:
    lang: str
    patient: str  # books and receives the whole timeline
    second: str  # moves a session, asks /aftercare, writes to the clinic
    nurse: str  # a configured staff member: alerts and the inbox
    staff: str  # joins through a staff invite and broadcasts
    due: tuple[str, str, str, str]  # four patients due for maintenance
    question: str
    answer: str
    worry: str  # must name a red-flag sign
    broadcast: str

    def typed(self, at: datetime, tz: ZoneInfo) -> str:
        """A session time as a patient types it ("3 December 14:30", "۱۲ آذر ۱۴:۳۰")."""
        return format_pattern(at, tz, self.lang, "d MMMM HH:mm")


SCRIPTS = {
    "en": Script(
        lang="en",
        patient="Anna",
        second="Ben",
        nurse="Nora",
        staff="Sam",
        due=("Maria", "Tom", "Lena", "Omar"),
        question="Is it all right to colour my hair next week?",
        answer="Please wait two weeks after the session before colouring your hair.",
        worry="my scalp feels hot and there is some pus",
        broadcast=(
            "It has been a few months since your last session: a good time for a maintenance "
            "session. Reply to the clinic or call us to book."
        ),
    ),
    "fa": Script(
        lang="fa",
        patient="سارا",
        second="بهرام",
        nurse="نرگس",
        staff="سام",
        due=("مریم", "Tom", "لیلا", "امید"),  # Tom's Telegram name is in Latin letters
        question="آیا می‌توانم هفته بعد موهایم را رنگ کنم؟",
        answer="لطفاً تا دو هفته بعد از جلسه موهایتان را رنگ نکنید.",
        worry="پوست سرم داغ شده و کمی چرک دارد",
        broadcast=(
            "چند ماه از آخرین جلسه شما گذشته است: زمان خوبی برای یک جلسه نگهدارنده است. "
            "برای رزرو، همین‌جا به کلینیک پیام دهید یا با ما تماس بگیرید."
        ),
    ),
    "ml": Script(
        lang="ml",
        patient="അനു",
        second="ബിനു",
        nurse="നീന",
        staff="സാം",
        due=("മരിയ", "Tom", "ലീന", "ഉമർ"),
        question="അടുത്ത ആഴ്ച മുടി കളർ ചെയ്യുന്നതിൽ കുഴപ്പമുണ്ടോ?",
        answer="സെഷൻ കഴിഞ്ഞ് രണ്ടാഴ്ച കഴിഞ്ഞു മാത്രം മുടി കളർ ചെയ്യുക.",
        worry="തലയോട്ടിയിൽ ചൂട് തോന്നുന്നു, കുറച്ച് പഴുപ്പും ഉണ്ട്",
        broadcast=(
            "നിങ്ങളുടെ അവസാന സെഷൻ കഴിഞ്ഞിട്ട് കുറച്ചു മാസങ്ങളായി: ഒരു മെയിന്റനൻസ് സെഷന് ഇത് "
            "നല്ല സമയമാണ്. ബുക്ക് ചെയ്യാൻ ഇവിടെ ക്ലിനിക്കിന് മറുപടി അയയ്ക്കുകയോ ഞങ്ങളെ വിളിക്കുകയോ ചെയ്യുക."
        ),
    ),
}
