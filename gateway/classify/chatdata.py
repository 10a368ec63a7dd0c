"""Chat-style training prompts with weak labels: hard (1) needs the cloud tier, easy (0) the edge tier is enough.

Sources (all shipped under data/chat/, see data/SOURCE.md for commits and licences):

- ``arena_hard_questions.jsonl.gz``: the 1,250 Arena-Hard v0.1 and v2.0 prompts (lmarena/arena-hard-auto,
  Apache-2.0), real Chatbot Arena user prompts selected for specificity, domain knowledge, complexity and
  problem solving: **hard** anchors. Group = Arena-Hard cluster (v0.1) or category (v2.0).
- ``self_instruct_seed_tasks.jsonl``: the 175 self-instruct seed tasks (yizhongw/self-instruct,
  Apache-2.0), everyday instructions with their input appended as a model would see it: **easy** anchors.
- A synthetic *floor pack* generated here from templates over topic lists (deterministic): everyday easy
  asks (small talk, one-line facts, conversions, word questions, quick suggestions) and transformations of
  a *given* text (summarise, translate, fix typos, extract, reformat) as **easy**, and reasoning or creation
  asks (prove, derive, design, implement, analyse trade-offs, critique; also applied to the same given
  texts) as **hard**. These are weak labels from task families, written for this purpose; they share no
  prompt with bench/everyday_chat.jsonl (checked by a test).

Each example is ``ChatExample(text, label, source, group)``; ``group`` keeps template families and
Arena-Hard clusters together in cross-validation folds.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CHAT_DIR = Path(__file__).resolve().parents[2] / "data" / "chat"
CHAT_FILES = ("arena_hard_questions.jsonl.gz", "self_instruct_seed_tasks.jsonl")
SOURCES = ("arena-hard", "self-instruct", "synthetic-easy", "synthetic-hard")
LABEL_DESCRIPTION = ("weak labels by source / template family: 1 (hard) = Arena-Hard prompts and synthetic reasoning or "
                     "creation asks; 0 (easy) = self-instruct seed tasks and synthetic everyday asks and "
                     "transformations of a given text")


@dataclass(frozen=True)
class ChatExample:
    text: str
    label: int  # 1 hard (cloud), 0 easy (edge)
    source: str  # "arena-hard", "self-instruct", "synthetic-easy", "synthetic-hard"
    group: str


def load_arena_hard(d: Path = CHAT_DIR) -> list[ChatExample]:
    out = []
    with gzip.open(d / "arena_hard_questions.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out.append(ChatExample(r["prompt"], 1, "arena-hard", f"ah:{r['set']}:{r['cluster'] or r['category']}"))
    return out


def self_instruct_outputs(d: Path = CHAT_DIR) -> list[str]:
    """The reference outputs of the self-instruct seed tasks (given texts for :func:`wrapped`)."""
    with open(d / "self_instruct_seed_tasks.jsonl", encoding="utf-8") as f:
        return [(json.loads(line).get("instances") or [{}])[0].get("output", "") for line in f if line.strip()]


def load_self_instruct(d: Path = CHAT_DIR) -> list[ChatExample]:
    out = []
    with open(d / "self_instruct_seed_tasks.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                inp = (r.get("instances") or [{}])[0].get("input", "").strip()
                text = r["instruction"].strip() + ("\n\n" + inp if inp else "")
                out.append(ChatExample(text, 0, "self-instruct", f"si:{r['name']}"))
    return out


# ---- synthetic floor pack -------------------------------------------------------------------------------

_SMALL_TALK = (
    "hello", "hey there", "good morning!", "thank you so much", "see you later", "what's up?", "how's it going",
    "nice to meet you", "ok thanks", "lol that's funny", "you're awesome", "bye for now", "hey, are you there?",
    "cool, thanks a lot", "happy friday!", "haha nice", "great, that works", "sorry, I meant the other one",
    "can you help me with something?", "who are you?", "what can you do?", "merry christmas!", "good evening",
    "thanks for the quick answer", "that's perfect, cheers", "hmm, not sure about that", "yes please",
    "no thanks", "I'm bored", "tell me something nice",
)
_COUNTRIES = ("France", "Japan", "Canada", "Brazil", "Kenya", "Norway", "Egypt", "India", "Mexico", "Peru",
              "Vietnam", "Poland", "Chile", "Ghana", "Turkey", "Italy", "Sweden", "Argentina", "Thailand", "Spain")
_BOOKS = ("Moby-Dick", "War and Peace", "The Great Gatsby", "Don Quixote", "Jane Eyre", "Dracula", "Hamlet",
          "The Hobbit", "Frankenstein", "Little Women", "Ulysses", "Emma", "Beloved", "Middlemarch")
_ANIMALS = ("penguins", "elephants", "dolphins", "owls", "giraffes", "bees", "sloths", "otters", "koalas", "crows")
_LANGS = ("Spanish", "French", "German", "Italian", "Portuguese", "Dutch", "Japanese", "Korean", "Polish", "Turkish")
_PHRASES = ("thank you", "where is the train station", "I am hungry", "see you tomorrow", "how much is this",
            "happy birthday", "excuse me", "I love you", "good luck", "what time is it", "nice to meet you")
_WORDS = ("big", "fast", "brave", "quiet", "ancient", "bright", "clumsy", "curious", "gloomy", "honest",
          "lazy", "polite", "rare", "tiny", "vivid", "wise", "eager", "fragile", "humble", "swift")
_UNITS = (("miles", "kilometres"), ("pounds", "kilograms"), ("inches", "centimetres"), ("litres", "gallons"),
          ("feet", "metres"), ("ounces", "grams"), ("hours", "minutes"), ("Celsius", "Fahrenheit"))
_EVERYDAY = ("a rainy Sunday", "a kid's birthday party", "a cheap date night", "a picnic", "a team lunch",
             "a long car trip", "a lazy breakfast", "a road trip playlist", "a housewarming gift",
             "a quiet evening at home", "a work icebreaker", "a summer barbecue")
_RELATIONS = ("my sister", "my boss", "my neighbour", "my best friend", "my grandma", "a colleague who is leaving",
              "my teacher", "my dad")
_FACT_Q = (
    "Who discovered penicillin?", "What is the chemical symbol for gold?", "How many continents are there?",
    "What's the tallest mountain in the world?", "When did the Berlin Wall fall?", "What is the speed of light?",
    "Who was the first person on the moon?", "What language is spoken in Brazil?", "How many legs does a spider have?",
    "What's the longest river in Africa?", "Which planet is closest to the sun?", "What is the freezing point of water?",
    "Who invented the telephone?", "How many minutes are in a day?", "What is the currency of Japan?",
    "Which ocean is the largest?", "Who composed the Four Seasons?", "What gas do plants absorb?",
    "What's the main ingredient of guacamole?", "How many strings does a violin have?",
)

# Given texts for the transformation asks (easy) and for the analysis asks on the same texts (hard).
_PASSAGES = (
    ("Our gym will be closed on Monday for the public holiday. Normal opening hours resume on Tuesday at 6am. "
    "The new spin classes start next week, and you can book them in the app from Friday. Please remember to "
    "bring a towel, and note that the lockers are now operated with a code rather than a key."),
    ("The library is introducing a new lending policy. From next month members can borrow up to fifteen items at "
    "once, and loan periods for books will increase from three to four weeks. DVDs will still be lent for one "
    "week. Late fees for children's books are being removed entirely, and adults can renew items online up to "
    "three times unless another member has reserved them."),
    ("I started running last spring after my doctor told me to get more exercise. At first I could barely manage "
    "ten minutes without stopping, but I followed a beginner plan three times a week. By the summer I ran my "
    "first 5k, and in October I finished a half marathon with my sister. The best part has been the people I "
    "met at the local running club, who turned a chore into something I look forward to."),
    ("Thank you for your order. Your parcel has been dispatched and should arrive within three to five working "
    "days. You can track it using the link in this email. If you are not at home, the courier will leave a card "
    "and try again the next day. Returns are free within 30 days; just use the label included in the box."),
    ("The town council met on Thursday to discuss the plans for the new playground in Riverside Park. Residents "
    "raised concerns about parking and noise, while parents said the old equipment was unsafe. The council "
    "agreed to hold a public consultation in March and to publish the designs on its website beforehand."),
    ("Tomatoes grow best in a sunny spot with at least six hours of direct light. Plant them after the last frost, "
    "water deeply twice a week rather than a little every day, and add a stake or cage so the stems do not "
    "break. Pinch out the side shoots on cordon varieties, and feed with a high-potassium fertiliser once the "
    "first fruits appear."),
    ("Hi all, the quarterly team dinner is booked for the 18th at Luigi's on King Street at 7pm. The company "
    "covers food and the first two drinks. Please tell me about any dietary requirements by next Wednesday, and "
    "let me know if you need a taxi home so I can add it to the booking."),
    ("The museum's new exhibition brings together more than two hundred objects from ancient Egypt, including "
    "jewellery, tools, painted coffins and a reconstructed tomb. Visitors can try writing their name in "
    "hieroglyphs at an interactive station. The exhibition runs until September and tickets are half price for "
    "students on Wednesdays."),
    ("Starting next week, the cafeteria will offer a vegetarian main dish every day and a vegan option on "
    "Mondays and Thursdays. Prices stay the same. We are also replacing plastic cutlery with wooden cutlery and "
    "would welcome feedback on the new menu through the form by the entrance."),
    ("My flight to Lisbon was delayed by four hours, so I missed the connection to Porto. The airline put me on "
    "the next flight, which left the following morning, and gave me a voucher for a hotel near the airport. "
    "Unfortunately my suitcase went to Porto without me, and I only got it back two days later."),
    ("The recipe serves four. Fry one chopped onion and two cloves of garlic in olive oil until soft. Add a tin "
    "of chopped tomatoes, a teaspoon of sugar and a handful of basil, and simmer for twenty minutes. Season with "
    "salt and pepper, stir through cooked pasta and serve with grated parmesan."),
    ("Please note that the parking lot behind building B will be resurfaced from 3 to 7 June. During this time "
    "staff should use the overflow car park on Mill Lane, which is a five-minute walk away. Disabled parking "
    "spaces near the main entrance will remain available throughout the works."),
)
_TRANSFORMS = (
    "Summarise this in one sentence:", "Can you summarize this for me?", "Give me a two-line summary of this text:",
    "Fix any typos and grammar mistakes in this:", "Proofread the text below:", "Translate this into {lang}:",
    "Please translate the following to {lang}:", "Rewrite this in a friendlier tone:",
    "Make this sound more formal:", "Turn this into a bullet list:", "List the key points of this text:",
    "Extract every date and time mentioned here:", "Shorten this to under 40 words:",
    "Give this text a short title:", "Rewrite this for a child:", "Turn this into a short tweet:",
    "What is the main point of this message?", "Count the sentences in this paragraph:",
    "Put this text in the past tense:", "Write a one-line reply to this saying thanks:",
)
_ANALYSES = (
    ("Critically analyse this text: what assumptions does it make, what is missing, and how would you improve "
    "the policy it describes? Justify each point."),
    "Design a data model and a service architecture for the system this text implies, and discuss the trade-offs.",
    ("Identify every possible failure mode in the process described below and propose a rigorous mitigation plan "
    "with the reasoning for each."),
    ("Write a detailed essay analysing the economic and social implications of the situation below, weighing "
    "competing arguments before reaching a conclusion."),
    ("Build a quantitative model of the scenario below, state your assumptions, derive the key quantities and "
    "explain how sensitive the conclusions are to each assumption."),
)

_MATH_STATEMENTS = (
    "there is no largest prime number", "the sum of the angles of a triangle is 180 degrees",
    "the cube root of 3 is irrational", "every bounded monotone sequence of real numbers converges",
    "n^3 - n is divisible by 6 for every integer n", "the harmonic series diverges",
    "a group of prime order is cyclic", "every continuous function on [a, b] is bounded",
    "the product of two consecutive integers is even", "e is irrational",
    "there are infinitely many primes congruent to 5 mod 6", "a tree with n vertices has n - 1 edges",
    "the determinant of a product equals the product of the determinants",
    "1 + 2 + ... + n = n(n+1)/2 for all positive integers n", "the set of rational numbers is countable",
    "every finite integral domain is a field", "the geometric mean never exceeds the arithmetic mean",
    "a continuous bijection from a compact space to a Hausdorff space is a homeomorphism",
)
_DERIVE = (
    "the quadratic formula", "the formula for compound interest with continuous compounding",
    "the gradient of the cross-entropy loss with a softmax output", "Kepler's third law from Newton's law of gravitation",
    "the ideal gas law from kinetic theory", "the closed form of the Fibonacci numbers",
    "the normal equations for linear regression", "the Euler-Lagrange equation", "the Bayes-optimal classifier for two Gaussians",
    "the time complexity of merge sort from its recurrence", "the period of a simple pendulum for small angles",
    "the maximum likelihood estimator of a Poisson rate",
)
_SYSTEMS = (
    ("a URL shortener", "serves 50,000 redirects per second with analytics"),
    ("a chat application", "delivers messages in order across devices and works offline"),
    ("a payment processing service", "never charges a customer twice even when requests are retried"),
    ("a distributed job scheduler", "survives the loss of any node without losing or duplicating jobs"),
    ("a search engine for a product catalogue", "handles typos, synonyms and ranking by relevance and sales"),
    ("a video streaming platform", "adapts bitrate to the network and scales to a million viewers"),
    ("a feature store for machine learning", "serves the same features online and offline without skew"),
    ("an inventory system for a chain of 300 shops", "stays consistent when the network between shops fails"),
    ("a notification service", "sends email, SMS and push notifications with per-user rate limits"),
    ("a multiplayer game server", "keeps players in sync with 100 ms of latency and prevents cheating"),
    ("a collaborative text editor", "merges concurrent edits without conflicts"),
    ("a logging pipeline", "ingests 2 TB a day and lets engineers query the last 30 days in seconds"),
)
_ALGOS = (
    "a trie with prefix search and deletion", "an LRU cache with O(1) operations", "the A* search algorithm",
    "a red-black tree", "Kruskal's minimum spanning tree algorithm with union-find", "a B-tree with insertion and deletion",
    "the Aho-Corasick string matching algorithm", "a thread pool with work stealing", "a bloom filter with a tunable false positive rate",
    "Tarjan's strongly connected components algorithm", "a regular expression matcher supporting *, + and ?",
    "the Raft leader election", "an interval tree", "a suffix array with LCP construction", "a JSON parser",
    "Karatsuba multiplication", "a skip list", "the simplex method for linear programming",
)
_PLANGS = ("Python", "Rust", "Go", "C", "Java", "TypeScript", "C++", "Haskell", "Kotlin")
_TRADEOFFS = (
    ("SQL", "NoSQL databases", "an e-commerce site with rapidly changing product attributes"),
    ("microservices", "a modular monolith", "a ten-person startup"),
    ("REST", "gRPC", "internal service-to-service calls"),
    ("server-side rendering", "a single-page app", "a content-heavy news site"),
    ("renting", "buying a home", "someone who may move cities in five years"),
    ("index funds", "picking individual stocks", "a retirement portfolio"),
    ("nuclear power", "solar with storage", "decarbonising a national grid"),
    ("a carbon tax", "cap and trade", "reducing industrial emissions"),
    ("Kafka", "RabbitMQ", "an event-driven order pipeline"),
    ("static typing", "dynamic typing", "a large codebase maintained by many teams"),
    ("batch", "streaming processing", "fraud detection"),
    ("universal basic income", "targeted welfare", "reducing poverty"),
)
_THINKERS = (
    ("Plato", "Aristotle", "the nature of knowledge"), ("Hobbes", "Locke", "the social contract"),
    ("Marx", "Adam Smith", "the division of labour"), ("Kant", "Mill", "the foundations of morality"),
    ("Friedman", "Minsky", "financial instability"), ("Descartes", "Hume", "causation and certainty"),
    ("Nietzsche", "Kierkegaard", "meaning and faith"), ("Machiavelli", "Erasmus", "how a ruler should govern"),
    ("Darwin", "Lamarck", "how species change"), ("Freud", "Jung", "the unconscious"),
)
_CRITIQUES = (
    "the efficient market hypothesis", "utilitarianism as a guide to public policy", "the use of GDP as a measure of welfare",
    "the replication crisis in psychology", "the argument that automation always creates more jobs than it destroys",
    "the design of the Electoral College", "standardised testing in university admissions", "the trolley problem as a moral test",
    "the peer review system in science", "the claim that remote work lowers productivity",
)
_WHY = (
    "the halting problem cannot be solved", "the Monty Hall switch wins two thirds of the time",
    "hash tables give O(1) average lookups but not worst-case", "the Roman Empire in the West collapsed",
    "interest rate rises reduce inflation, and when they fail to", "gradient descent can get stuck in saddle points",
    "the Sapir-Whorf hypothesis is controversial", "deadlocks occur and how to prove a locking scheme is free of them",
    "the central limit theorem holds and when it fails", "quantum computers threaten RSA but not AES-256",
)
_EQUATIONS = (
    "x^3 - 6x^2 + 11x - 6 = 0", "2^x = x^2 for real x", "the system x + y + z = 6, x - y + 2z = 5, 2x + y - z = 1",
    "y'' + 4y = sin(2t) with y(0) = 0, y'(0) = 1", "the integral of ln(x)/x^2 from 1 to infinity",
    "the limit of (1 + 1/n)^(n^2) / e^n as n grows", "the number of ways to tile a 2 x 10 board with dominoes",
    "the expected number of rolls of a die until two sixes in a row", "the sum of 1/k^2 for k from 1 to infinity",
    "the integral of sin^4(x) from 0 to pi",
)
_HARD_OPENERS = ("", "Please ", "Can you ", "I need you to ", "Help me ", "For my course: ", "Could you ")


def _typo(text: str, rng: random.Random) -> str:
    """Inject a few swapped / dropped letters (for the "fix the typos" asks)."""
    words = text.split(" ")
    for _ in range(max(2, len(words) // 12)):
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 4:
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.5 else w[:j] + w[j + 1:]
    return " ".join(words)


def is_prose(text: str) -> bool:
    """A passage usable as the *given text* of a transformation ask: plain prose, no code, maths or options."""
    if not 200 <= len(text) <= 1500:
        return False
    if any(m in text for m in ("```", "\n    ", "{", "};", "def ", "$", "\\", "\nA.", "\nA)", "(A)", "=", "http")):
        return False
    letters = sum(ch.isalpha() for ch in text)
    digits = sum(ch.isdigit() for ch in text)
    return letters >= 0.75 * len(text) and digits <= 4


def wrapped(passages: Sequence[str], seed: int = 0, per_easy: int = 1, hard_every: int = 4) -> list[ChatExample]:
    """Given-text asks over other prompts' text: each passage wrapped in `per_easy` transformation asks
    (easy) and every `hard_every`-th one also in an analysis ask (hard). The same text under a different ask
    gets a different label, so the ask, not the topic of the text, has to carry the label."""
    rng = random.Random(seed + 1)
    out = []
    for i, p in enumerate(passages):
        for t in rng.sample(_TRANSFORMS, per_easy):
            text = _typo(p, rng) if "typo" in t.lower() or "proofread" in t.lower() else p
            out.append(ChatExample(t.format(lang=rng.choice(_LANGS)) + "\n\n" + text, 0, "synthetic-easy", "se:wrapped"))
        if hard_every and i % hard_every == 0:
            out.append(ChatExample(rng.choice(_ANALYSES) + "\n\n" + p, 1, "synthetic-hard", "sh:wrapped"))
    return out


def synthetic(seed: int = 0, passages: Sequence[str] = ()) -> list[ChatExample]:
    """The floor pack: template prompts (deterministic for a seed), plus :func:`wrapped` asks over `passages`."""
    rng = random.Random(seed)
    out: list[ChatExample] = []

    def easy(text: str, group: str) -> None:
        out.append(ChatExample(text, 0, "synthetic-easy", "se:" + group))

    def hard(text: str, group: str) -> None:
        out.append(ChatExample(text, 1, "synthetic-hard", "sh:" + group))

    for t in _SMALL_TALK:
        easy(t, "smalltalk")
    for _ in range(60):
        n1, n2 = rng.randint(3, 99), rng.randint(3, 99)
        op = rng.choice(("+", "-", "*", " plus ", " times ", " minus "))
        easy(rng.choice(("What is {a}{op}{b}?", "what's {a}{op}{b}", "{a}{op}{b}=?", "quick one: {a}{op}{b}")).format(a=n1, op=op, b=n2), "arith")
    for _ in range(30):
        easy(f"Calculate {rng.choice((5, 10, 20, 25, 30, 50))} percent of {rng.randint(2, 90) * 10}", "percent")
    for c in _COUNTRIES:
        easy(rng.choice(("What is the capital of {c}?", "capital of {c}?", "What currency does {c} use?",
                         "What language do they speak in {c}?")).format(c=c), "country")
    for b in _BOOKS:
        easy(rng.choice(("Who wrote {b}?", "Who is the author of {b}?", "When was {b} published?")).format(b=b), "book")
    for q in _FACT_Q:
        easy(q, "fact")
    for a in _ANIMALS:
        easy(rng.choice(("Tell me a joke about {a}.", "Give me a fun fact about {a}.", "What do {a} eat?",
                         "How long do {a} live?")).format(a=a), "animal")
    for p in _PHRASES:
        for lang in rng.sample(_LANGS, 2):
            easy(rng.choice(("How do you say '{p}' in {l}?", "Translate \"{p}\" to {l}", "{p} in {l}?")).format(p=p, l=lang), "phrase")
    for w in _WORDS:
        easy(rng.choice(("What's a synonym for \"{w}\"?", "Give me another word for {w}", "What is the opposite of {w}?",
                         "Define the word \"{w}\".", "Use \"{w}\" in a sentence.")).format(w=w), "word")
    for a, b in _UNITS:
        for _ in range(3):
            easy(rng.choice(("Convert {n} {a} to {b}.", "How many {b} is {n} {a}?", "{n} {a} in {b}?")).format(n=rng.randint(2, 500), a=a, b=b), "unit")
    for e in _EVERYDAY:
        easy(rng.choice(("Give me a few ideas for {e}.", "Any suggestions for {e}?", "What should I bring to {e}?",
                         "Suggest some music for {e}.")).format(e=e), "ideas")
    for r in _RELATIONS:
        easy(rng.choice(("Write a short thank-you note to {r}.", "Write a birthday text for {r}.",
                         "Help me say congratulations to {r} in one line.")).format(r=r), "note")
    for p in _PASSAGES:
        for t in rng.sample(_TRANSFORMS, 8):
            text = _typo(p, rng) if "typo" in t.lower() or "proofread" in t.lower() else p
            easy(t.format(lang=rng.choice(_LANGS)) + "\n\n" + text, "transform")
        for t in rng.sample(_ANALYSES, 2):
            hard(t + "\n\n" + p, "analyse-given")

    for s in _MATH_STATEMENTS:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice(("prove that {s}.", "give a rigorous proof that {s}.",
                 "show that {s}, and explain each step of the proof.")).format(s=s), "prove")
    for d in _DERIVE:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice(("derive {d} step by step.", "derive {d} from first principles.",
                 "walk me through a full derivation of {d}.")).format(d=d), "derive")
    for name, req in _SYSTEMS:
        for _ in range(3):
            hard(rng.choice(_HARD_OPENERS) + rng.choice((
                "design {n} that {r}. Cover the data model, the components and how it scales.",
                "design the architecture of {n} that {r}, and discuss the failure modes.",
                "how would you build {n} that {r}? Explain the trade-offs of your design.")).format(n=name, r=req), "design")
    for algo in _ALGOS:
        for lang in rng.sample(_PLANGS, 2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice((
                "implement {a} in {l} and analyse its time complexity.", "write {a} in {l}, with tests for the edge cases.",
                "implement {a} in {l} and prove that it is correct.")).format(a=algo, l=lang), "implement")
    for a, b, ctx in _TRADEOFFS:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice((
                "analyse the trade-offs between {a} and {b} for {c}.", "compare {a} and {b} for {c}, and recommend one with reasons.",
                "what are the pros and cons of {a} versus {b} for {c}? Weigh them carefully.")).format(a=a, b=b, c=ctx), "tradeoff")
    for a, b, topic in _THINKERS:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice((
                "write an essay comparing {a} and {b} on {t}.", "compare and contrast the views of {a} and {b} on {t}, and argue which is more convincing.",
                "critically compare {a}'s and {b}'s positions on {t}.")).format(a=a, b=b, t=topic), "essay")
    for c in _CRITIQUES:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice(("critique {c}.", "write a rigorous critique of {c}.",
                 "evaluate the strongest arguments for and against {c}.")).format(c=c), "critique")
    for w in _WHY:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice(("explain why {w}, with a careful argument.",
                 "give a rigorous explanation of why {w}.")).format(w=w), "why")
    for e in _EQUATIONS:
        for _ in range(2):
            hard(rng.choice(_HARD_OPENERS) + rng.choice(("solve {e}, justifying each step.", "find {e} and show your working.",
                 "work out {e} exactly.")).format(e=e), "solve")
    out.extend(wrapped(passages, seed))
    # Deduplicate (templates can repeat), keeping the first occurrence.
    seen: set[str] = set()
    uniq = []
    for ex in out:
        if ex.text not in seen:
            seen.add(ex.text)
            uniq.append(ex)
    return uniq


def source_files(d: Path = CHAT_DIR) -> list[dict]:
    """Name, size and sha256 of each chat data file (recorded in the model metadata)."""
    import hashlib

    return [{"file": n, "bytes": (d / n).stat().st_size, "sha256": hashlib.sha256((d / n).read_bytes()).hexdigest()}
            for n in CHAT_FILES if (d / n).is_file()]


def load_chat(d: Path = CHAT_DIR, seed: int = 0, passages: Sequence[str] = ()) -> list[ChatExample]:
    """All chat training prompts. `passages`: extra given texts for :func:`wrapped` (train.py passes the
    prose among the Arena-Hard prompts and the outcome sets' *train* split; never the test split)."""
    return load_arena_hard(d) + load_self_instruct(d) + synthetic(seed, passages)


def prose_passages(texts: Sequence[str], limit: int, seed: int = 0) -> list[str]:
    """Up to `limit` prose passages among `texts`, chosen by a seeded shuffle (deterministic)."""
    pool = sorted({t.strip() for t in texts if is_prose(t.strip())})
    random.Random(seed).shuffle(pool)
    return pool[:limit]
