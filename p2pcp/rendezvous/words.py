"""The words of short codes: 256 of them, so each word is 8 bits of a code.

This list was written for p2pcp and is dedicated to the public domain
(CC0 1.0: no rights reserved; copy it for any purpose). Every word is
lowercase ASCII, 3 to 8 letters, a concrete thing that is easy to say over
the phone and to spell, and no word is the beginning of another (a word
read aloud is never heard as the start of a longer one);
``tests/unit/rendezvous/test_codes.py`` checks all of it.
"""

from __future__ import annotations

# fmt: off
WORDS: tuple[str, ...] = (
    "acorn", "actor", "adobe", "agent", "alarm", "album", "alley", "amber", "anchor", "angle",
    "ankle", "apple", "apron", "arena", "arrow", "aspen", "atlas", "attic", "autumn", "badge",
    "bagel", "bakery", "balcony", "bamboo", "banjo", "barrel", "basket", "beacon", "beaver",
    "bicycle", "bishop", "blanket", "blossom", "border", "bottle", "breeze", "bridge", "brook",
    "bucket", "buffalo", "bundle", "butter", "button", "cabin", "cactus", "camera", "candle",
    "canyon", "captain", "carpet", "castle", "cellar", "cement", "cherry", "circus", "clover",
    "coffee", "comet", "copper", "cotton", "coyote", "crayon", "cricket", "crossbow",
    "crystal", "curtain", "daisy", "dancer", "denim", "desert", "diamond", "dinner", "doctor",
    "dolphin", "donkey", "dragon", "drawer", "dune", "eagle", "easel", "echo", "elbow",
    "ember", "engine", "falcon", "feather", "ferry", "fiddle", "finch", "flannel", "forest",
    "fossil", "fountain", "frost", "galaxy", "garden", "garlic", "gazelle", "giraffe",
    "glacier", "granite", "gravel", "guitar", "hammer", "harbor", "harvest", "hazel", "helmet",
    "hobby", "honey", "hornet", "husky", "igloo", "indigo", "insect", "island", "ivory",
    "jacket", "jaguar", "jasmine", "jelly", "jester", "jigsaw", "journal", "jungle", "juniper",
    "kayak", "kennel", "kettle", "kitten", "koala", "ladder", "lagoon", "lantern", "laptop",
    "lemon", "leopard", "lilac", "linen", "lizard", "lobster", "locket", "lumber", "magnet",
    "mango", "maple", "marble", "marker", "meadow", "melon", "meteor", "mitten", "monkey",
    "muffin", "napkin", "nectar", "needle", "nickel", "noodle", "nugget", "oasis", "ocean",
    "octopus", "olive", "onion", "opera", "orange", "orbit", "orchid", "otter", "oyster",
    "paddle", "palace", "panda", "parrot", "pebble", "pelican", "pencil", "pepper", "piano",
    "pickle", "pigeon", "pillow", "pilot", "pirate", "planet", "plaza", "pocket", "pony",
    "potato", "pretzel", "puffin", "puzzle", "quarter", "quilt", "rabbit", "raccoon", "radio",
    "ranger", "raven", "ribbon", "riddle", "robin", "rocket", "rodeo", "rubber", "ruby",
    "saddle", "salmon", "shadow", "shovel", "signal", "silver", "sloth", "socket", "sofa",
    "spider", "sponge", "squash", "statue", "sunset", "sweater", "tablet", "tango", "teapot",
    "temple", "tennis", "thunder", "ticket", "tiger", "timber", "toaster", "tomato", "tractor",
    "trumpet", "tulip", "tunnel", "turnip", "turtle", "umbrella", "unicorn", "valley",
    "velvet", "violin", "volcano", "voyage", "waffle", "wagon", "walnut", "window", "wizard",
    "wombat", "yacht", "yogurt", "zebra", "zipper",
)
# fmt: on

# Position of each word: parsing a code looks words up here.
WORD_INDEX: dict[str, int] = {word: index for index, word in enumerate(WORDS)}
