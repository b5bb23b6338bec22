"""Topics of the monitor's samples: keyword tables, matching, and display names."""

from __future__ import annotations

import re
import unicodedata

OTHER_TOPIC = "other"

# Keywords for the built-in corpus (English / Hungarian Bible verses), lower case. A keyword of four or
# more characters matches any word that starts with it ("pray" -> "prayed", "király" -> "királyok", as
# Hungarian adds suffixes); a shorter one must match a whole word; one with a space matches a phrase.
BUILTIN_TOPICS: dict[str, list[str]] = {
    "family & genealogy": [
        "son", "sons", "daughter", "father", "mother", "wife", "husband", "brother", "sister", "child",
        "born", "begot", "became the father", "firstborn", "descendant", "generation", "genealogy",
        "family", "household", "marri", "widow", "grandson",
        "fia", "fiai", "fiát", "fiú", "leány", "lánya", "apja", "anyja", "anya", "atyja", "feleség",
        "férj", "testvér", "fivér", "nővér", "gyermek", "gyerek", "született", "nemzett", "nemzetség",
        "elsőszülött", "utód", "család", "házasság", "özvegy", "unoká",
    ],
    "worship & prayer": [
        "pray", "praise", "worship", "bless", "thank", "sing", "song", "hymn", "hallelujah", "glory",
        "glorif", "holy", "temple", "sanctuary", "psalm", "rejoice", "exalt",
        "imád", "dicsér", "dicsőít", "dicsőség", "áldott", "áldás", "áldja", "áldjá", "hálát", "hálaad",
        "ének", "zsoltár", "szent", "templom", "leborul", "magasztal", "örvend", "ujjong",
    ],
    "war & kings": [
        "king", "reign", "throne", "army", "armies", "battle", "war", "wars", "warrior", "sword", "spear",
        "shield", "fought", "fight", "enemy", "enemies", "soldier", "captain", "commander", "chariot",
        "siege", "besieg", "conquer", "defeat", "slew", "struck", "attack", "weapon",
        "király", "uralkod", "trón", "sereg", "harc", "háború", "hadsereg", "had", "vitéz", "kard",
        "lándzsa", "pajzs", "ellenség", "ellenfél", "katona", "vezér", "parancsnok", "szekér", "ostrom",
        "legyőz", "megver", "megöl", "fegyver",
    ],
    "law & sacrifice": [
        "law", "laws", "command", "statute", "ordinance", "decree", "offer", "sacrific", "altar", "priest",
        "burnt", "incense", "unclean", "clean", "atonement", "lamb", "bull", "goat", "ram", "blood",
        "sabbath", "covenant", "tabernacle", "tithe",
        "törvény", "parancsolat", "rendelkezés", "rendelet", "áldoz", "égőáldozat", "vétekáldozat",
        "oltár", "pap", "papok", "papot", "papj", "főpap", "tömjén", "tiszta", "tisztátalan", "tisztul",
        "tisztít", "engesztel", "bárány", "bika", "kecske", "kos", "vér", "vére", "vérét", "szombat",
        "szövetség", "sátor", "tized",
    ],
    "prophecy": [
        "prophe", "vision", "oracle", "woe", "thus says", "declare", "the day of", "dream", "seer",
        "foretold", "repent",
        "prófét", "prófécia", "látomás", "látnok", "jövendöl", "ezt mondja az úr", "így szól", "jaj",
        "kijelent", "álom", "álmot", "megtér", "az úr napja",
    ],
    "travel & journeys": [
        "journey", "travel", "road", "ship", "boat", "sail", "voyage", "sea", "wilderness", "desert",
        "camp", "encamp", "depart", "arrive", "crossed", "set out", "passed through",
        "utaz", "útra", "útján", "úton", "hajó", "tenger", "puszta", "tábor", "elindul", "megérkez",
        "átkel", "vándor", "kivonul",
    ],
    "nature & farming": [
        "field", "vine", "harvest", "seed", "sow", "sowed", "sower", "reap", "tree", "fruit", "grain",
        "wheat", "barley", "flock", "sheep", "cattle", "herd", "shepherd", "rain", "olive", "oxen", "ox",
        "plant", "garden", "grass", "flower", "soil", "fig", "thorn", "river", "mountain",
        "mező", "szántóföld", "szőlő", "aratás", "arat", "learat", "mag", "vet", "vetés", "magvet",
        "fa", "fák", "fát", "gyümölcs", "gabona", "búza", "árpa", "nyáj", "juh", "juho", "marha", "csorda",
        "pásztor", "eső", "olajfa", "ökör", "ökrö", "ültet", "kert", "fű", "virág", "hegy", "folyó",
        "füge", "tövis",
    ],
    "teaching & parables": [
        "teach", "taught", "disciple", "parable", "rabbi", "wisdom", "wise", "fool", "understand",
        "instruct", "knowledge", "proverb", "listen", "learn", "most certainly i tell you",
        "tanít", "tanul", "példázat", "példabeszéd", "mester", "bölcs", "bolond", "ostoba", "megért",
        "értelem", "értelm", "tudás", "ismeret", "hallgat", "bizony mondom",
    ],
    "faith & grace": [
        "faith", "believ", "grace", "mercy", "merciful", "salvation", "save", "saved", "savior", "gospel",
        "love", "spirit", "christ", "righteous", "hope", "forgiv", "sin", "sins", "eternal",
        "resurrection", "assembly", "apostle",
        "hit", "hite", "hitben", "higgy", "hívő", "kegyelem", "kegyelm", "irgalom", "irgalm", "üdvösség",
        "üdvözít", "megment", "evangéli", "szeret", "lélek", "lelk", "krisztus", "igaz", "remény",
        "megbocsát", "bűn", "bűnö", "bűnt", "bűné", "örök élet", "feltámad", "gyülekezet", "apostol",
    ],
}

_TOPIC_NAMES_ZH = {
    "family & genealogy": "家庭与家谱", "worship & prayer": "敬拜与祷告", "war & kings": "战争与君王",
    "law & sacrifice": "律法与献祭", "prophecy": "预言", "travel & journeys": "旅途与行程",
    "nature & farming": "自然与农耕", "teaching & parables": "教导与比喻", "faith & grace": "信心与恩典",
    OTHER_TOPIC: "其他",
}

_WORD = re.compile(r"\w+")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def merge_topics(extra: dict[str, list[str]] | None = None, builtin: bool = True) -> dict[str, list[str]]:
    """The user's topics first (they win ties), then the built-in ones; a shared name pools keywords."""
    merged: dict[str, list[str]] = {name: list(words) for name, words in (extra or {}).items()}
    if builtin:
        for name, words in BUILTIN_TOPICS.items():
            merged.setdefault(name, [])
            merged[name] += [w for w in words if w not in merged[name]]
    return merged


def classify_topic(text: str, topics: dict[str, list[str]] | None = None) -> str:
    """The topic whose keywords occur most often in ``text`` (ties: the first listed), or ``"other"``.

    ``topics`` maps a topic name to keywords (default: :data:`BUILTIN_TOPICS`). Matching is
    case-insensitive; a keyword of 4+ characters matches words it starts, a shorter one whole words,
    one with a space a phrase.
    """
    topics = BUILTIN_TOPICS if topics is None else topics
    words = _WORD.findall(_fold(text))
    joined = " " + " ".join(words) + " "
    best, best_hits = OTHER_TOPIC, 0
    for name, keywords in topics.items():
        hits = 0
        for keyword in keywords:
            key = " ".join(_WORD.findall(_fold(keyword)))
            if not key:
                continue
            if " " in key:
                hits += joined.count(" " + key)
            elif len(key) >= 4:
                hits += sum(w.startswith(key) for w in words)
            else:
                hits += sum(w == key for w in words)
        if hits > best_hits:
            best, best_hits = name, hits
    return best


def topic_name(topic: str, language: str = "en") -> str:
    """The display name of a topic (built-in topics are translated for ``zh``)."""
    return _TOPIC_NAMES_ZH.get(topic, topic) if language == "zh" else topic
