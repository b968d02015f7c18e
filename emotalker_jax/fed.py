"""FED: a procedurally generated corpus of free-text emotion descriptions with labels.

Every record pairs a prompt ("mostly happy, a little surprised", "brows knitted, lips
pressed", "not angry, just tired") with an intensity vector s in [0, 1]^8 in MEAD order
(neutral, angry, contempt, disgusted, fear, happy, sad, surprised). The label rules are
documented in docs/FED.md; in short:

* a *term* (adjective, noun, -ing verb phrase, idiom, or FACS-like facial action) names
  one emotion and has a bare strength ``w`` (0.7 for plain words such as "angry"; 1.0
  for "furious"; 0.4 for "annoyed"; fixed for idioms);
* a *degree word* ("barely" 0.1 ... "slightly" 0.3 ... "very" 0.8 ... "utterly" 1.0)
  sets ``d`` (0.7 when absent); the intensity is ``s = min(1, w * d / 0.7)``;
* mixtures keep each component's own intensity (no normalisation), except *proportion*
  phrases ("equal parts X and Y", "70% X, 30% Y") whose shares sum to 1, and *role*
  phrases ("mostly X, a little Y") whose primary gets d = 0.8;
* negated emotions are 0; a prompt whose only emotion is negated, and a description
  with no emotion content, is neutral at 0.7 (the label of the bare word "neutral");
* neutral is an emotion like the others (graded by degree words); it is 0 whenever the
  prompt names another emotion and no neutral word.

Splits: terms (per emotion and kind), sentence frames, mixture / negation connectives
and content-free sentences are partitioned once, by a fixed ``SPLIT_SEED``, into
train / validation / test pools; the canonical words ("angry", "anger", ...) and the
phrasings quoted in the design ("not at all X", "mostly X, a little Y", ...) are pinned
to train. A validation or test prompt is built only from its own split's terms and
frames, so test accuracy measures generalisation to unseen synonyms and sentence frames.
Degree words are shared, except a few held out for validation and test.

Everything is deterministic given ``seed`` (numpy PCG64 streams per split).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import zlib
from typing import Sequence

import numpy as np

from emotalker_jax.emotions import EMOTIONS, EMOTION_INDEX, NUM_EMOTIONS

SPLITS = ("train", "validation", "test")
# Diagnostic split: the test split's held-out frames, connectives and content-free
# sentences filled with the *train* vocabulary, so unseen phrasing and unseen words can
# be told apart. Same size as test.
DIAGNOSTIC_SPLITS = ("test_frames",)
ALL_SPLITS = SPLITS + DIAGNOSTIC_SPLITS
SPLIT_SEED = 401_08049        # fixes which terms / frames are held out (FED version 1)
SPLIT_FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}
DEFAULT_SIZE = 60_000         # records over all three splits
BARE = 0.7                    # degree of a term with no degree word
NEUTRAL_DEFAULT = BARE        # label of "no emotion content" / a negated-only prompt
PRIMARY = 0.8                 # degree of the primary emotion in "mostly X, ..." phrases
P_CANONICAL = 0.2             # chance a train phrase uses a pinned (canonical) term
CATEGORIES = ("single", "mixture", "proportion", "negation", "contrast", "content_free")
KINDS = ("adj", "noun", "verb", "facs")
FED_VERSION = "1.0.0"


# ----------------------------------------------------------------------------------------
# Lexicon. One line per term: "<kind> <text> [<w>] [pin] [fixed]".
#   kind: adj | noun | verb (-ing phrase) | facs ("<part> | <participle>")
#   w: bare strength (default 0.7); pin: always in train; fixed: takes no degree word
#   (idioms, multi-word phrases). "{Poss}" is the subject's possessive (her/his/their).
# ----------------------------------------------------------------------------------------

_LEXICON = {
    "neutral": """
adj neutral pin
adj calm pin
adj composed
adj relaxed
adj expressionless
adj blank
adj impassive
adj deadpan
adj unemotional
adj placid
adj emotionless
adj unexpressive
adj stoic
adj serene
adj collected
adj tranquil
adj unruffled
adj unbothered
adj detached
adj tired pin
adj weary
adj drowsy
adj indifferent
adj nonchalant
adj poker-faced
adj straight-faced
adj unfazed
adj at ease 0.7 fixed
adj cool as a cucumber 0.8 fixed
adj calm and collected 0.8 fixed
noun neutrality pin
noun composure
noun calmness
noun serenity
noun indifference
noun stillness
noun detachment
noun tranquility
noun impassivity
noun nonchalance
verb staring blankly 0.8 fixed
verb keeping a straight face 0.8 fixed
verb wearing a poker face 0.8 fixed
verb showing no particular emotion 0.8 fixed
verb keeping {Poss} face still 0.7 fixed
verb breathing evenly 0.6 fixed
verb looking straight ahead 0.6 fixed
facs facial muscles | loose | fixed
facs brows | level | fixed
facs mouth | at rest | fixed
facs lips | loosely closed | fixed
facs gaze | steady | fixed
facs forehead | smooth | fixed
facs cheeks | slack | fixed
facs eyes | calm and open | fixed
""",
    "angry": """
adj angry pin
adj mad
adj furious 1.0
adj irate 0.85
adj livid 1.0
adj enraged 1.0
adj irritated 0.4
adj annoyed 0.4
adj cross 0.5
adj fuming 0.9
adj outraged 0.9
adj hostile 0.7
adj incensed 0.95
adj infuriated 0.95
adj indignant 0.6
adj resentful 0.55
adj irascible 0.6
adj aggravated 0.5
adj exasperated 0.5
adj grumpy 0.4
adj bad-tempered 0.5
adj wrathful 0.9
adj vexed 0.5
adj ticked off 0.6 fixed
adj hot under the collar 0.7 fixed
adj up in arms 0.8 fixed
adj on the warpath 0.8 fixed
adj fit to be tied 0.9 fixed
adj in a foul mood 0.5 fixed
noun anger pin
noun rage 1.0
noun fury 1.0
noun irritation 0.4
noun annoyance 0.4
noun outrage 0.9
noun hostility
noun resentment 0.55
noun indignation 0.6
noun wrath 0.95
noun ire 0.8
noun exasperation 0.5
noun frustration 0.5
verb scowling 0.75
verb glaring 0.8
verb snarling 0.9
verb raging 1.0
verb glowering 0.8
verb bristling 0.6
verb huffing 0.5
verb gritting {Poss} teeth
verb clenching {Poss} fists
verb seeing red 1.0 fixed
verb blowing a fuse 0.9 fixed
verb flying off the handle 0.9 fixed
facs brows | knitted
facs brows | lowered
facs brows | drawn down hard
facs lips | pressed
facs lips | tightened
facs eyes | narrowed
facs nostrils | flared
facs jaw | clenched
facs teeth | bared
facs lower lids | tensed
facs forehead | furrowed
""",
    "contempt": """
adj contemptuous pin
adj scornful
adj disdainful
adj dismissive 0.55
adj condescending 0.6
adj snide 0.6
adj smug 0.5
adj haughty 0.6
adj arrogant 0.5
adj derisive
adj supercilious
adj patronizing 0.55
adj sarcastic 0.5
adj snobbish 0.55
adj disrespectful 0.5
adj unimpressed 0.45
adj self-satisfied 0.5
adj holier-than-thou 0.7 fixed
adj too good for this 0.6 fixed
adj above it all 0.5 fixed
noun contempt pin
noun scorn
noun disdain
noun derision 0.75
noun condescension 0.6
noun smugness 0.5
noun arrogance 0.5
noun mockery 0.6
noun disrespect 0.5
noun sarcasm 0.5
noun haughtiness 0.6
verb smirking 0.6
verb sneering 0.8
verb scoffing 0.6
verb jeering
verb snickering 0.5
verb mocking 0.6
verb rolling {Poss} eyes 0.6
verb curling {Poss} lip
verb looking down {Poss} nose 0.7 fixed
verb looking down on everyone 0.7 fixed
verb turning up {Poss} nose 0.7 fixed
facs one lip corner | raised
facs one corner of the mouth | pulled back
facs chin | tilted up
facs lips | twisted to one side
facs head | tilted back
facs one cheek | dimpled
facs eyes | rolled upward
facs one side of the upper lip | lifted
""",
    "disgusted": """
adj disgusted pin
adj revolted 0.9
adj repulsed 0.9
adj sickened 0.85
adj nauseated 0.85
adj grossed out 0.75
adj repelled 0.8
adj appalled 0.8
adj queasy 0.5
adj squeamish 0.5
adj put off 0.4
adj nauseous 0.8
adj sick to {Poss} stomach 0.85 fixed
adj green around the gills 0.6 fixed
adj ready to throw up 0.9 fixed
adj about to be sick 0.9 fixed
noun disgust pin
noun revulsion 0.9
noun repugnance 0.85
noun distaste 0.5
noun aversion 0.55
noun loathing 0.9
noun abhorrence 0.9
noun nausea 0.8
noun repulsion 0.85
verb gagging 1.0
verb retching 1.0
verb grimacing 0.6
verb cringing 0.5
verb recoiling
verb wrinkling {Poss} nose
verb pulling a yuck face 0.7 fixed
facs nose | wrinkled
facs nose | scrunched up
facs upper lip | raised
facs upper lip | curled back
facs tongue | poking out
facs head | pulled back
facs nostrils | pinched
facs chin | pushed up
facs mouth | pulled into a grimace
""",
    "fear": """
adj fearful pin
adj afraid
adj scared pin
adj frightened 0.75
adj terrified 1.0
adj petrified 1.0
adj anxious 0.5
adj nervous 0.45
adj worried 0.45
adj panicked 0.95
adj alarmed 0.65
adj uneasy 0.35
adj apprehensive 0.4
adj tense 0.4
adj jittery 0.45
adj spooked 0.65
adj horrified 0.95
adj panicky 0.85
adj timid 0.35
adj shaken 0.6
adj jumpy 0.45
adj scared stiff 1.0 fixed
adj white as a sheet 0.8 fixed
adj on edge 0.5 fixed
adj in a cold sweat 0.8 fixed
noun fear pin
noun terror 1.0
noun dread 0.8
noun panic 0.95
noun anxiety 0.5
noun fright 0.75
noun horror 0.95
noun alarm 0.65
noun apprehension 0.4
noun nervousness 0.45
noun unease 0.35
noun trepidation 0.5
noun worry 0.45
verb trembling 0.75
verb cowering 0.9
verb panicking 0.95
verb flinching 0.55
verb quaking 0.8
verb shrinking back
verb shuddering
verb freaking out 0.9
verb biting {Poss} nails 0.5
verb shaking like a leaf 0.9 fixed
verb jumping out of {Poss} skin 0.85 fixed
facs brows | raised and drawn together
facs upper eyelids | raised
facs lips | stretched back
facs mouth corners | stretched sideways
facs eyes | wide and staring
facs forehead | wrinkled in the middle
facs neck | tensed
facs face | drained of colour
facs pupils | dilated
""",
    "happy": """
adj happy pin
adj joyful 0.8
adj cheerful 0.65
adj glad 0.6
adj delighted 0.85
adj elated 0.95
adj ecstatic 1.0
adj content 0.4
adj pleased 0.55
adj jolly
adj merry
adj gleeful 0.8
adj thrilled 0.9
adj overjoyed 1.0
adj euphoric 1.0
adj jubilant 0.9
adj upbeat 0.55
adj chirpy 0.6
adj blissful 0.85
adj radiant 0.8
adj sunny 0.6
adj amused 0.5
adj giddy 0.75
adj exuberant 0.85
adj light-hearted 0.55
adj satisfied 0.4
adj over the moon 1.0 fixed
adj on cloud nine 1.0 fixed
adj on top of the world 0.9 fixed
adj in seventh heaven 1.0 fixed
adj tickled pink 0.8 fixed
adj all smiles 0.8 fixed
adj in high spirits 0.75 fixed
noun happiness pin
noun joy 0.85
noun delight 0.85
noun glee 0.8
noun cheer 0.65
noun bliss 0.9
noun elation 0.95
noun contentment 0.4
noun pleasure 0.6
noun euphoria 1.0
noun amusement 0.5
noun exhilaration 0.9
noun jubilation 0.9
noun gladness 0.6
noun merriment
verb smiling pin
verb grinning 0.8
verb beaming 0.9
verb laughing 0.9
verb chuckling 0.6
verb giggling 0.65
verb glowing 0.75
verb walking on air 0.9 fixed
verb grinning like a Cheshire cat 0.9 fixed
verb smiling from ear to ear 1.0 fixed
facs cheeks | raised
facs lip corners | pulled up
facs mouth corners | turned up
facs eyes | crinkled
facs lower eyelids | pushed up
facs eyes | creased at the corners
facs face | lit up
facs teeth | showing
""",
    "sad": """
adj sad pin
adj unhappy 0.6
adj sorrowful 0.85
adj miserable 0.85
adj depressed 0.8
adj gloomy 0.6
adj melancholy 0.6
adj downcast 0.65
adj dejected 0.75
adj despondent 0.85
adj heartbroken 1.0
adj glum 0.55
adj forlorn 0.75
adj mournful 0.8
adj tearful 0.75
adj disappointed 0.45
adj crestfallen
adj grief-stricken 1.0
adj wistful 0.35
adj somber 0.55
adj woeful 0.75
adj downhearted 0.65
adj devastated 1.0
adj disheartened 0.6
adj upset 0.55
adj down in the dumps 0.7 fixed
adj down in the mouth 0.6 fixed
adj on the verge of tears 0.75 fixed
adj close to tears 0.7 fixed
adj in the doldrums 0.55 fixed
noun sadness pin
noun sorrow 0.85
noun grief 1.0
noun misery 0.85
noun despair 0.95
noun gloom 0.6
noun heartbreak 1.0
noun unhappiness 0.6
noun dejection 0.75
noun disappointment 0.45
noun woe 0.75
noun anguish 0.95
noun desolation 0.9
noun heartache 0.85
verb crying 0.85 pin
verb sobbing 1.0
verb weeping 0.9
verb sulking 0.45
verb moping 0.55
verb sniffling 0.6
verb sighing 0.4
verb pouting 0.4
verb tearing up 0.6 fixed
verb holding back tears 0.65 fixed
verb fighting back tears 0.7 fixed
verb feeling blue 0.55 fixed
verb crying {Poss} eyes out 1.0 fixed
facs inner brows | raised
facs lip corners | pulled down
facs mouth corners | drooping
facs eyes | cast down
facs eyelids | heavy
facs lower lip | pushed out
facs gaze | lowered
facs eyes | glistening with tears
facs brows | drawn up in the middle
""",
    "surprised": """
adj surprised pin
adj astonished 0.85
adj amazed 0.8
adj astounded 0.9
adj shocked 0.85
adj stunned 0.85
adj startled
adj dumbfounded 0.85
adj flabbergasted 0.95
adj speechless 0.75
adj awestruck 0.8
adj gobsmacked 0.95
adj thunderstruck 0.95
adj staggered 0.8
adj incredulous 0.6
adj wide-eyed
adj agog 0.75
adj floored 0.85
adj bewildered 0.5
adj taken aback 0.6 fixed
adj caught off guard 0.6 fixed
adj knocked for six 0.85 fixed
adj bowled over 0.8 fixed
adj lost for words 0.75 fixed
adj blown away 0.85 fixed
adj struck dumb 0.9 fixed
noun surprise pin
noun astonishment 0.85
noun amazement 0.8
noun shock 0.85
noun disbelief 0.65
noun awe 0.75
noun wonder 0.6
noun bewilderment 0.5
noun incredulity 0.6
noun stupefaction 0.9
verb gasping 0.8
verb gaping 0.8
verb reeling
verb staring open-mouthed 0.8 fixed
verb doing a double take fixed
verb raising {Poss} eyebrows 0.6 fixed
verb dropping {Poss} jaw 0.9 fixed
facs brows | raised high
facs eyes | wide open
facs jaw | dropped
facs mouth | hanging open
facs upper eyelids | lifted
facs forehead | creased horizontally
facs lips | parted in an O
facs mouth | rounded
""",
}

# Degree words: "<kind> <value> <text> [pin]". kind adj: pre-modifier ("slightly X");
# noun: quantifier ("a hint of X"); nounq: adjectival quantifier ("deep X"); verb:
# "<text>" with "~" marking where the verb goes ("~ slightly", "barely ~"); facs:
# participle modifier ("brows slightly knitted").
_DEGREES = """
adj 0.10 barely pin
adj 0.10 hardly
adj 0.10 scarcely
adj 0.15 faintly
adj 0.15 marginally
adj 0.20 a touch pin
adj 0.20 a shade
adj 0.20 a trifle
adj 0.25 a tad
adj 0.25 a wee bit
adj 0.25 vaguely
adj 0.30 slightly pin
adj 0.30 a little pin
adj 0.30 mildly
adj 0.35 a bit pin
adj 0.35 a little bit
adj 0.45 somewhat pin
adj 0.45 kind of
adj 0.45 sort of
adj 0.45 partly
adj 0.55 moderately
adj 0.55 fairly
adj 0.55 reasonably
adj 0.60 rather
adj 0.60 noticeably
adj 0.65 quite pin
adj 0.65 pretty
adj 0.65 decidedly
adj 0.75 clearly
adj 0.75 visibly
adj 0.75 genuinely
adj 0.75 truly
adj 0.80 very pin
adj 0.80 really
adj 0.80 seriously
adj 0.85 deeply pin
adj 0.85 highly
adj 0.85 strongly
adj 0.85 terribly
adj 0.90 intensely
adj 0.90 awfully
adj 0.90 tremendously
adj 0.90 exceptionally
adj 0.95 extremely pin
adj 0.95 incredibly
adj 0.95 immensely
adj 0.95 enormously
adj 0.95 exceedingly
adj 1.00 utterly pin
adj 1.00 completely pin
adj 1.00 totally
adj 1.00 absolutely
adj 1.00 overwhelmingly
adj 1.00 entirely
adj 1.00 thoroughly
noun 0.10 a trace of pin
noun 0.10 a whisper of
noun 0.15 a hint of pin
noun 0.15 a glimmer of
noun 0.15 a flicker of
noun 0.20 a touch of pin
noun 0.20 a shade of
noun 0.20 a suggestion of
noun 0.25 a dash of
noun 0.25 a tinge of
noun 0.25 a sprinkle of
noun 0.30 a little pin
noun 0.35 a bit of pin
noun 0.35 a little bit of
noun 0.45 some pin
noun 0.45 a measure of
noun 0.45 a degree of
noun 0.65 plenty of
noun 0.80 a lot of pin
noun 0.80 a great deal of
nounq 0.30 slight pin
nounq 0.30 mild
nounq 0.55 moderate pin
nounq 0.55 noticeable
nounq 0.65 considerable
nounq 0.75 clear
nounq 0.75 obvious
nounq 0.75 unmistakable
nounq 0.75 visible
nounq 0.80 strong pin
nounq 0.80 great
nounq 0.85 deep pin
nounq 0.85 profound
nounq 0.85 heavy
nounq 0.90 intense pin
nounq 0.90 fierce
nounq 0.90 acute
nounq 0.95 extreme pin
nounq 0.95 tremendous
nounq 0.95 immense
nounq 1.00 overwhelming pin
nounq 1.00 utter
nounq 1.00 complete
nounq 1.00 total
nounq 1.00 sheer
nounq 1.00 pure
verb 0.10 barely ~ pin
verb 0.10 hardly ~
verb 0.15 faintly ~
verb 0.15 ~ faintly
verb 0.20 ~ ever so slightly
verb 0.30 ~ slightly pin
verb 0.30 slightly ~
verb 0.30 ~ a little pin
verb 0.35 ~ a bit
verb 0.45 ~ somewhat pin
verb 0.45 sort of ~
verb 0.45 kind of ~
verb 0.55 ~ moderately
verb 0.65 ~ noticeably
verb 0.75 clearly ~ pin
verb 0.75 visibly ~
verb 0.75 ~ openly
verb 0.80 ~ a lot pin
verb 0.80 really ~
verb 0.85 ~ hard
verb 0.90 ~ intensely pin
verb 0.90 ~ fiercely
verb 1.00 ~ uncontrollably pin
verb 1.00 ~ without restraint
facs 0.10 barely pin
facs 0.15 faintly
facs 0.30 slightly pin
facs 0.30 a little
facs 0.40 partly
facs 0.45 somewhat pin
facs 0.55 moderately
facs 0.75 clearly
facs 0.85 strongly pin
facs 0.85 sharply
facs 0.90 intensely
facs 1.00 fully pin
facs 1.00 extremely
"""

# Degree words held out of train (and of the other held-out split).
_DEGREE_HOLDOUT = {
    "validation": {"scarcely", "a trifle", "reasonably", "seriously", "enormously",
                   "a whisper of", "a sprinkle of", "acute", "~ without restraint", "sharply"},
    "test": {"marginally", "a wee bit", "decidedly", "terribly", "exceedingly", "wholly",
             "a glimmer of", "a degree of", "profound", "sheer", "kind of ~", "~ fiercely",
             "partly"},
}

# ----------------------------------------------------------------------------------------
# Subjects and sentence frames.
# ----------------------------------------------------------------------------------------

# (subject, object, possessive, pronoun, plural)
SUBJECTS = (
    ("she", "her", "her", "she", False), ("he", "him", "his", "he", False),
    ("they", "them", "their", "they", True), ("the woman", "the woman", "her", "she", False),
    ("the man", "the man", "his", "he", False), ("the speaker", "the speaker", "their", "they", False),
    ("the person", "the person", "their", "they", False),
    ("the presenter", "the presenter", "their", "they", False),
    ("the girl", "the girl", "her", "she", False), ("the boy", "the boy", "his", "he", False),
    ("the actor", "the actor", "his", "he", False), ("the actress", "the actress", "her", "she", False),
    ("the narrator", "the narrator", "their", "they", False),
    ("my avatar", "my avatar", "its", "it", False), ("the character", "the character", "their", "they", False),
    ("the newsreader", "the newsreader", "her", "she", False),
    ("the teacher", "the teacher", "his", "he", False), ("the host", "the host", "her", "she", False),
    ("the old man", "the old man", "his", "he", False),
    ("the young woman", "the young woman", "her", "she", False),
)
PEOPLE = ("a man", "a woman", "a child", "an old man", "a young woman", "someone", "a person",
          "a girl", "a boy", "a news anchor", "a student", "a doctor")

# Verb conjugations: key -> (singular, plural).
_CONJ = {
    "is": ("is", "are"), "isnt": ("isn't", "aren't"), "looks": ("looks", "look"),
    "seems": ("seems", "seem"), "appears": ("appears", "appear"), "feels": ("feels", "feel"),
    "shows": ("shows", "show"), "has": ("has", "have"), "keeps": ("keeps", "keep"),
    "talks": ("talks", "talk"), "speaks": ("speaks", "speak"), "does_not": ("doesn't", "don't"),
    "comes": ("comes", "come"), "radiates": ("radiates", "radiate"), "reads": ("reads", "read"),
    "displays": ("displays", "display"), "starts": ("starts", "start"), "sits": ("sits", "sit"),
    "answers": ("answers", "answer"), "becomes": ("becomes", "become"),
}

# Frames: "<id> <kind> [flags] :: <template>". Flags: pin (always train), attr (the slot is
# attributive: "a {A} face" — plain one-word terms only), nodet (no determiner phrases
# such as "a hint of" in the slot). Slots: {A} adj phrase, {N} noun phrase, {V} -ing
# phrase, {F} facial-action phrase; {a_A} = the adj phrase with its article.
_FRAMES = """
a01 adj pin :: {A}
a02 adj pin :: {S} {looks} {A}
a03 adj :: {S} {is} {A}
a04 adj pin :: make {O} {A}
a05 adj :: make {O} look {A}
a06 adj pin attr :: {a_A} expression
a07 adj :: {S} {seems} {A}
a08 adj :: {S} {appears} {A}
a09 adj :: {A} while talking
a10 adj :: {S} {feels} {A}
a11 adj :: {Poss} face is {A}
a12 adj attr :: give {O} {a_A} look
a13 adj :: {S} should look {A}
a14 adj :: looking {A}
a15 adj :: {S} {comes} across as {A}
a16 adj attr :: {a_A} face
a17 adj :: I want {O} to look {A}
a18 adj :: {S} {is} speaking and {looks} {A}
a19 adj :: {A}, talking to the camera
a20 adj :: show {O} looking {A}
a21 adj :: {S} should appear {A}
a22 adj attr :: {a_A} look on {Poss} face
a23 adj :: {S} {looks} {A} today
a24 adj :: {S} {is} feeling {A}
a25 adj :: an expression that is {A}
a26 adj :: {S} {becomes} {A}
a27 adj :: keep {O} {A}
a28 adj attr :: {A} face, please
a29 adj :: {S}, {A}
a30 adj :: {S} {is} looking {A} as {P} {P_speaks}
a31 adj :: the face of someone {A}
a32 adj :: {S} {is} reading the news and {looks} {A}
n01 noun pin :: {N}
n02 noun pin :: a face showing {N}
n03 noun :: {N} on {Poss} face
n04 noun :: {S} {shows} {N}
n05 noun :: express {N}
n06 noun nodet :: an expression of {N}
n07 noun nodet :: {S} {is} full of {N}
n08 noun :: speaking with {N}
n09 noun :: with {N} in {Poss} eyes
n10 noun :: {Poss} expression shows {N}
n11 noun :: convey {N}
n12 noun nodet :: a look of {N}
n13 noun :: {S} {radiates} {N}
n14 noun :: {N} while speaking
n15 noun :: {S} {is} showing {N}
n16 noun :: {S} {talks} with {N}
n17 noun :: {Poss} face betrays {N}
n18 noun :: a portrait expressing {N}
n19 noun :: {S} {displays} {N}
n20 noun :: {N} in {Poss} expression
n21 noun :: there is {N} in {Poss} face
n22 noun nodet :: {S} {is} filled with {N}
n23 noun :: {S} {speaks} with {N} in {Poss} voice and face
n24 noun :: give {O} an air of {N}
v01 verb pin :: {V}
v02 verb pin :: {S} {is} {V}
v03 verb :: {person} {V}
v04 verb :: {S} {keeps} {V}
v05 verb :: {V} while talking
v06 verb :: show {O} {V}
v07 verb :: {S} {talks} while {V}
v08 verb :: {V} at the camera
v09 verb :: {S} {starts} {V}
v10 verb :: someone {V}
v11 verb :: {S} {is} {V} as {P} {P_speaks}
v12 verb :: {S} {sits} there, {V}
v13 verb :: {S} can't stop {V}
v14 verb :: picture {O} {V}
v15 verb :: {V}, {S} {answers} the question
v16 verb :: {S} {is} caught {V}
v17 verb :: a clip of {O} {V}
v18 verb :: make {O} appear to be {V}
f01 facs pin :: {F}
f02 facs pin :: a face with {F}
f03 facs :: {S}: {F}
f04 facs :: talking with {F}
f05 facs :: {F}, while speaking
f06 facs :: an expression with {F}
f07 facs :: {Poss} face: {F}
f08 facs :: {S} {speaks} with {F}
f09 facs :: show {O} with {F}
f10 facs :: {S} {looks} at the camera with {F}
f11 facs :: {F} as {P} {P_talks}
f12 facs :: make {O} speak with {F}
f13 facs :: a portrait: {F}
f14 facs :: {S} {answers} with {F}
"""

# Mixture connectives: "<id> <outer kind> <type> <n> [pin] :: <template>". type: sym (each
# component keeps its own degree), role (primary marker "mostly" = 0.8, then minor
# components; ordered as worded), prop (shares sum to 1), more ("more X than Y": X bare,
# Y 0.4). Slots: {A1} adj phrase with any degree; {A1+} adj phrase with a degree >= 0.55;
# {a1} bare adj; {N1}/{N1+}/{n1} the same for nouns; {V1}/{V1+} -ing phrases; {m2} a minor
# adj degree (0.3-0.45), {m3} a trace degree (0.1-0.25); {q2}/{q3} the same for noun
# quantifiers; {p1}.. percentages.
_MIXTURES = """
m01 adj sym 2 pin :: {A1} and {A2}
m02 adj sym 2 :: {A1} but {A2}
m03 adj sym 2 :: {A1}, yet {A2}
m04 adj sym 2 :: both {a1} and {a2}
m05 adj sym 2 :: {A1} and {A2} at the same time
m06 adj sym 2 :: {A1} as well as {A2}
m07 noun sym 2 pin :: {N1} and {N2}
m08 noun sym 2 :: {N1} mixed with {N2}
m09 noun sym 2 :: {N1} along with {N2}
m10 adj sym 2 :: {A1}, and also {A2}
m11 verb sym 2 :: {V1} and {V2}
m12 verb sym 2 :: {V1} but {V2}
m13 adj sym 2 pin :: {A1}, {A2}
m14 verb sym 2 pin :: {V1}, {A2}
m15 adj sym 2 :: {A1} while also {A2}
m16 noun sym 2 :: {N1} together with {N2}
m20 adj sym 3 pin :: {A1}, {A2} and {A3}
m21 noun sym 3 :: {N1}, {N2} and {N3}
m22 adj sym 3 :: {A1}, {A2}, and {A3} all at once
m23 adj sym 3 :: {A1} and {A2}, plus {A3}
r01 adj role 2 pin :: mostly {a1}, {m2} {a2}
r02 adj role 2 :: mainly {a1} with {q2} {n2}
r03 adj role 2 :: predominantly {a1}, {m2} {a2}
r04 adj role 2 :: largely {a1} and {m2} {a2}
r05 adj role 2 pin :: {A1+} with {q2} {n2}
r06 adj role 2 :: {A1+}, tinged with {n2}
r07 noun role 2 :: {N1+} with {q2} {n2}
r08 adj role 2 :: {A1+} and {m2} {a2}
r09 adj role 2 :: above all {a1}, but also {m2} {a2}
r10 adj role 2 :: {a1} more than anything, {m2} {a2}
r11 adj more 2 pin :: more {a1} than {a2}
r12 verb role 2 :: {V1+} with {q2} {n2}
r13 adj role 2 :: mostly {a1} though {m2} {a2}
r14 adj role 2 :: primarily {a1}, with {q2} {n2}
r20 adj role 3 pin :: mostly {a1}, {m2} {a2} and {m3} {a3}
r21 adj role 3 :: {A1+} with {q2} {n2} and {q3} {n3}
r22 noun role 3 :: mainly {n1}, {q2} {n2} and {q3} {n3}
r23 adj role 3 :: largely {a1}, {m2} {a2}, {m3} {a3}
p01 noun prop 2 pin :: equal parts {n1} and {n2}
p02 adj prop 2 :: half {a1}, half {a2}
p03 adj prop 2 pin :: {p1}% {a1}, {p2}% {a2}
p04 noun prop 2 :: two parts {n1} to one part {n2}
p05 noun prop 2 :: a {p1}/{p2} mix of {n1} and {n2}
p06 noun prop 2 :: {n1} and {n2} in equal measure
p07 adj prop 2 :: somewhere between {a1} and {a2}
p08 noun prop 2 pin :: a mix of {n1} and {n2}
p09 adj prop 2 :: {a1} and {a2} in equal amounts
p10 noun prop 2 :: a blend of {n1} and {n2}
p20 noun prop 3 pin :: equal parts {n1}, {n2} and {n3}
p21 adj prop 3 :: {p1}% {a1}, {p2}% {a2}, {p3}% {a3}
p22 noun prop 3 :: a third each of {n1}, {n2} and {n3}
p23 noun prop 3 :: a blend of {n1}, {n2} and {n3}
"""

# Negations. "<id> <type> [pin] :: template". type neg: only {x} (bare adj) / {xn} (noun)
# negated -> neutral; contrast: {x}/{xn} negated and {A}/{a}/{N} asserted.
_NEGATIONS = """
g01 neg pin :: not at all {x}
g02 neg :: {S} {is} not {x}
g03 neg :: {S} {is} not the least bit {x}
g04 neg :: {S} {does_not} look {x}
g05 neg :: not in the least {x}
g06 neg :: no {xn}
g07 neg :: without any {xn}
g08 neg :: no sign of {xn}
g09 neg :: {S} {shows} no {xn}
g10 neg :: nothing {x} about {O}
g11 neg :: not even slightly {x}
g12 neg :: far from {x}
g13 neg :: anything but {x}
g14 neg pin :: {S} {is} not {x} at all
g15 neg :: free of {xn}
g16 neg pin :: not {x}
g17 neg :: {Poss} face shows no {xn}
g18 neg :: {S} {isnt} {x}
g19 neg :: not one bit {x}
g20 neg :: {S} {is} in no way {x}
c01 contrast pin :: not {x}, just {A}
c02 contrast :: not {x} but {A}
c03 contrast pin :: {A}, not {x}
c04 contrast :: {A} rather than {x}
c05 contrast :: {S} {is} not {x}, just {A}
c06 contrast :: {S} {isnt} {x}; {P} {P_is} {A}
c07 contrast :: {A} but not {x}
c08 contrast :: {A}, not at all {x}
c09 contrast :: {A} and not {x}
c10 contrast :: {A} instead of {x}
c11 contrast :: {S} {does_not} look {x}, only {A}
c12 contrast :: no {xn}, only {N}
c13 contrast :: {A}, without any {xn}
c14 contrast :: {S} {is} {A}, not {x}
c15 contrast :: not really {x}, more {a}
c16 contrast :: {S} {isnt} {x}, just {A}
c17 contrast :: {N}, but no {xn}
c18 contrast :: {A}, but in no way {x}
"""

# Descriptions with no emotion content (label: neutral = NEUTRAL_DEFAULT).
_CONTENT_FREE = """
e01 pin :: {S} {is} talking
e02 pin :: {S} {talks} to the camera
e03 :: {S} {reads} the news
e04 :: a portrait of {person}
e05 :: {S} {is} giving a presentation
e06 :: {S} {is} describing the weather
e07 :: just talking
e08 :: {S} {is} reading a list of numbers
e09 :: {S} {is} speaking in a quiet room
e10 :: {person} at a desk, talking
e11 :: {S} {is} wearing a {colour} shirt
e12 :: {S} {has} short hair
e13 :: {S} {is} sitting by a window
e14 :: say the sentence slowly
e15 :: {S} {is} answering a question
e16 :: {S} {is} explaining a recipe
e17 :: the video shows {O} speaking
e18 :: {S} {speaks} into a microphone
e19 :: an ordinary face
e20 :: a head-and-shoulders shot of {O}
e21 :: {S} {is} counting to ten
e22 :: {S} {is} reading aloud
e23 :: {person} in a {colour} jacket
e24 :: {S} {is} introducing the next speaker
e25 :: {S} {is} spelling {Poss} name
e26 :: a photo of {person} in a kitchen
e27 :: {S} {is} talking about the train schedule
e28 :: {person} with glasses, speaking
e29 :: {S} {is} reciting the alphabet
e30 :: a frontal view of {O}
"""
COLOURS = ("red", "grey", "white", "black", "green", "yellow", "brown", "striped", "plain", "navy")


# ----------------------------------------------------------------------------------------
# Parsed tables.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Term:
  """One emotion word or phrase. id = "<emotion>:<kind>:<text>"."""
  emotion: int
  kind: str          # adj | noun | verb | facs
  text: str          # for facs: "<part> | <participle>"
  w: float           # bare strength
  pin: bool
  fixed: bool        # takes no degree word

  @property
  def id(self) -> str:
    return f"{EMOTIONS[self.emotion]}:{self.kind}:{self.text}"

  def surface(self, poss: str = "her") -> str:
    if self.kind == "facs":
      part, participle = [s.strip() for s in self.text.split("|")]
      return f"{part} {participle}"
    return self.text.replace("{Poss}", poss)


@dataclasses.dataclass(frozen=True)
class Degree:
  kind: str          # adj | noun | nounq | verb | facs
  value: float
  text: str
  pin: bool


@dataclasses.dataclass(frozen=True)
class Frame:
  id: str
  kind: str
  template: str
  pin: bool
  flags: frozenset = frozenset()
  n: int = 1


def _parse_lexicon() -> list[Term]:
  terms, seen = [], set()
  for emo, block in _LEXICON.items():
    for line in block.strip().splitlines():
      line = line.strip()
      if not line:
        continue
      kind, rest = line.split(" ", 1)
      if kind == "facs":
        parts = [p.strip() for p in rest.split("|")]
        flags = set(parts[2:])
        text = f"{parts[0]} | {parts[1]}"
        w = BARE
      else:
        toks = rest.split(" ")
        flags = set()
        w = BARE
        while toks and (toks[-1] in ("pin", "fixed") or re.fullmatch(r"\d\.\d+", toks[-1])):
          t = toks.pop()
          if t in ("pin", "fixed"):
            flags.add(t)
          else:
            w = float(t)
        text = " ".join(toks)
      term = Term(EMOTION_INDEX[emo], kind, text, w, "pin" in flags, "fixed" in flags)
      key = term.surface().lower()
      if key in seen:
        raise AssertionError(f"duplicate FED term {key!r}")
      seen.add(key)
      terms.append(term)
  return terms


def _parse_degrees() -> list[Degree]:
  out = []
  for line in _DEGREES.strip().splitlines():
    kind, value, rest = line.strip().split(" ", 2)
    pin = rest.endswith(" pin")
    text = rest[:-4] if pin else rest
    out.append(Degree(kind, float(value), text, pin))
  return out


def _parse_frames(block: str, typed: bool) -> list[Frame]:
  out = []
  for line in block.strip().splitlines():
    head, template = line.split("::", 1)
    toks = head.split()
    fid = toks[0]
    if typed == "mix":
      kind, ftype, n = toks[1], toks[2], int(toks[3])
      flags = frozenset(toks[4:]) | {ftype}
    elif typed == "neg":
      kind, n = toks[1], 1
      flags = frozenset(toks[1:])
    elif typed == "free":
      kind, n = "free", 1
      flags = frozenset(toks[1:])
    else:
      kind, n = toks[1], 1
      flags = frozenset(toks[2:])
    out.append(Frame(fid, kind, template.strip(), "pin" in flags, flags, n))
  return out


TERMS: tuple[Term, ...] = tuple(_parse_lexicon())
DEGREES: tuple[Degree, ...] = tuple(_parse_degrees())
FRAMES: tuple[Frame, ...] = tuple(_parse_frames(_FRAMES, False))
MIXTURES: tuple[Frame, ...] = tuple(_parse_frames(_MIXTURES, "mix"))
NEGATIONS: tuple[Frame, ...] = tuple(_parse_frames(_NEGATIONS, "neg"))
CONTENT_FREE: tuple[Frame, ...] = tuple(_parse_frames(_CONTENT_FREE, "free"))


def _partition(items: Sequence, rng: np.random.Generator) -> dict[str, list]:
  """Splits the unpinned items into train / validation / test: ~20% test (at least one
  when 2+ are free), ~15% validation (at least one when 3+ are free), the rest train."""
  pinned = [x for x in items if x.pin]
  free = [x for x in items if not x.pin]
  order = rng.permutation(len(free))
  free = [free[i] for i in order]
  n = len(free)
  n_test = max(int(round(0.2 * n)), 1) if n >= 2 else 0
  n_val = max(int(round(0.15 * n)), 1) if n >= 3 else 0
  return {"test": free[:n_test], "validation": free[n_test:n_test + n_val],
          "train": pinned + free[n_test + n_val:]}


def _group_seed(*names: str) -> np.random.Generator:
  return np.random.default_rng([SPLIT_SEED, zlib.crc32("/".join(names).encode())])


@dataclasses.dataclass
class Pools:
  """The vocabulary one split may use."""
  terms: dict          # (emotion, kind) -> list[Term]
  degrees: dict        # kind -> list[Degree]
  frames: dict         # kind -> list[Frame]
  mixtures: list
  negations: list
  content_free: list


@functools.lru_cache(maxsize=1)
def split_pools() -> dict[str, Pools]:
  """The fixed train / validation / test partition of terms, frames and connectives
  (plus the diagnostic 'test_frames': train terms and degrees, test frames). Read-only."""
  pools = {s: Pools({}, {}, {}, [], [], []) for s in SPLITS}
  for e in range(NUM_EMOTIONS):
    for kind in KINDS:
      group = [t for t in TERMS if t.emotion == e and t.kind == kind]
      parts = _partition(group, _group_seed("term", EMOTIONS[e], kind))
      for s in SPLITS:
        pools[s].terms[(e, kind)] = parts[s]
  for kind in KINDS:
    group = [f for f in FRAMES if f.kind == kind]
    parts = _partition(group, _group_seed("frame", kind))
    for s in SPLITS:
      pools[s].frames[kind] = parts[s]
  for name, table in (("mixtures", MIXTURES), ("negations", NEGATIONS),
                      ("content_free", CONTENT_FREE)):
    # Partition within each (type, n) group so every split has every mixture type.
    groups: dict = {}
    for f in table:
      key = (tuple(sorted(f.flags & {"sym", "role", "prop", "more", "neg", "contrast"})), f.n)
      groups.setdefault(key, []).append(f)
    for gk, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
      parts = _partition(group, _group_seed(name, str(gk)))
      for s in SPLITS:
        getattr(pools[s], name).extend(parts[s])
  held = set().union(*_DEGREE_HOLDOUT.values())
  for s in SPLITS:
    for kind in ("adj", "noun", "nounq", "verb", "facs"):
      pools[s].degrees[kind] = [
          d for d in DEGREES if d.kind == kind
          and (d.text not in held or d.text in _DEGREE_HOLDOUT.get(s, ()))]
  tr, te = pools["train"], pools["test"]
  pools["test_frames"] = Pools(terms=tr.terms, degrees=tr.degrees, frames=te.frames,
                               mixtures=te.mixtures, negations=te.negations,
                               content_free=te.content_free)
  return pools


# ----------------------------------------------------------------------------------------
# Records and labels.
# ----------------------------------------------------------------------------------------

@dataclasses.dataclass
class FedRecord:
  """One FED pair. intensities: (8,) float32 in [0, 1], MEAD order."""
  prompt: str
  intensities: np.ndarray
  split: str
  category: str                 # one of CATEGORIES
  n_emotions: int               # number of emotions with intensity > 0
  is_mixed: bool                # n_emotions >= 2
  is_negated: bool
  order: tuple = ()             # emotions in worded dominance order (role/prop/more phrases)
  terms: tuple = ()             # ids of the terms used
  frame: str = ""               # frame / connective ids, '+'-joined
  negated: tuple = ()           # emotions that were negated

  def to_json(self) -> dict:
    return {"prompt": self.prompt,
            "intensities": [round(float(x), 4) for x in self.intensities],
            "split": self.split, "category": self.category, "n_emotions": self.n_emotions,
            "is_mixed": self.is_mixed, "is_negated": self.is_negated,
            "order": [EMOTIONS[i] for i in self.order], "terms": list(self.terms),
            "frame": self.frame, "negated": [EMOTIONS[i] for i in self.negated]}

  @staticmethod
  def from_json(d: dict) -> "FedRecord":
    return FedRecord(
        prompt=d["prompt"], intensities=np.asarray(d["intensities"], np.float32),
        split=d["split"], category=d["category"], n_emotions=int(d["n_emotions"]),
        is_mixed=bool(d["is_mixed"]), is_negated=bool(d["is_negated"]),
        order=tuple(EMOTION_INDEX[e] for e in d.get("order", ())),
        terms=tuple(d.get("terms", ())), frame=d.get("frame", ""),
        negated=tuple(EMOTION_INDEX[e] for e in d.get("negated", ())))


def term_intensity(term: Term, degree: float | None) -> float:
  """s = min(1, w * d / 0.7) for a graded term (d = 0.7 when no degree word); w if fixed."""
  if term.fixed or degree is None:
    return float(term.w)
  return float(min(1.0, term.w * degree / BARE))


class _NoCandidate(Exception):
  """The split's pools have no term for a requested (emotion, kind): resample."""


class _Gen:
  """Builds records of one split from its pools with one numpy Generator."""

  def __init__(self, pools: Pools, rng: np.random.Generator, split: str):
    self.p, self.rng, self.split = pools, rng, split

  # -- small helpers ----------------------------------------------------------------------
  def choice(self, seq):
    if not seq:
      raise _NoCandidate()
    return seq[int(self.rng.integers(len(seq)))]

  def subject(self):
    s, o, poss, pro, plural = self.choice(SUBJECTS)
    ctx = {"S": s, "O": o, "Poss": poss, "P": pro, "person": self.choice(PEOPLE),
           "colour": self.choice(COLOURS)}
    for k, (sg, pl) in _CONJ.items():
      ctx[k] = pl if plural else sg
      ctx["P_" + k] = pl if pro == "they" else sg   # the pronoun's own agreement
    return ctx

  def term(self, emotion: int, kind: str, *, graded_only=False, plain_only=False,
           w_range=None):
    cands = self.p.terms[(emotion, kind)]
    if graded_only:
      cands = [t for t in cands if not t.fixed]
    if plain_only:   # a single word-like adjective usable attributively / after "more"
      cands = [t for t in cands if not t.fixed and "{" not in t.text]
    if w_range is not None:
      cands = [t for t in cands if w_range[0] <= t.w <= w_range[1]]
    pinned = [t for t in cands if t.pin]
    if pinned and self.rng.random() < P_CANONICAL:   # the emotion's own name, more often
      return self.choice(pinned)
    return self.choice(cands) if cands else None

  def degree(self, kind: str, lo=0.0, hi=1.0, p_bare=0.25, allow_bare=True):
    """A degree word of `kind` with value in [lo, hi] or None (bare, value 0.7)."""
    if allow_bare and lo <= BARE <= hi and self.rng.random() < p_bare:
      return None
    cands = [d for d in self.p.degrees[kind] if lo <= d.value <= hi]
    return self.choice(cands)

  def emotions(self, n: int, allow_neutral: bool) -> list[int]:
    pool = list(range(NUM_EMOTIONS)) if allow_neutral else list(range(1, NUM_EMOTIONS))
    return [int(i) for i in self.rng.choice(pool, size=n, replace=False)]

  # -- phrases ----------------------------------------------------------------------------
  def adj_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else f"{deg.text} {t}"

  def noun_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else f"{deg.text} {t}"

  def verb_phrase(self, term: Term, deg: Degree | None, ctx) -> str:
    t = term.surface(ctx["Poss"])
    return t if deg is None else deg.text.replace("~", t)

  def facs_phrase(self, terms: Sequence[Term], deg: Degree | None) -> str:
    acts = []
    for t in terms:
      part, participle = [s.strip() for s in t.text.split("|")]
      acts.append(f"{part} {participle}" if deg is None else f"{part} {deg.text} {participle}")
    if len(acts) == 1:
      return acts[0]
    if self.rng.random() < 0.5:
      return ", ".join(acts)
    return ", ".join(acts[:-1]) + " and " + acts[-1]

  def graded_phrase(self, emotion: int, kind: str, ctx, lo=0.0, hi=1.0, p_bare=0.25,
                    w_range=None, graded_only=False, plain_only=False):
    """(text, intensity, term ids, degree or None, first term) for one emotion."""
    if kind == "facs":
      pool = self.p.terms[(emotion, "facs")]
      k = min(len(pool), int(self.rng.integers(1, 4)))
      idx = self.rng.choice(len(pool), size=k, replace=False)
      terms = [pool[int(i)] for i in sorted(idx)]
      fixed = all(t.fixed for t in terms)
      deg = None if fixed else self.degree("facs", lo, hi, p_bare)
      s = term_intensity(terms[0], None if deg is None else deg.value)
      return self.facs_phrase(terms, deg), s, tuple(t.id for t in terms), deg, terms[0]
    term = self.term(emotion, kind, graded_only=graded_only or lo > 0.0 or hi < 1.0,
                     plain_only=plain_only, w_range=w_range)
    if term is None:
      term = self.term(emotion, kind, plain_only=plain_only) or self.choice([])
    dkind = kind
    if kind == "noun":
      dkind = "noun" if self.rng.random() < 0.5 else "nounq"
    deg = None if term.fixed else self.degree(dkind, lo, hi, p_bare)
    if kind == "noun" and deg is not None and not self._has(dkind, lo, hi):
      deg = None
    s = term_intensity(term, None if deg is None else deg.value)
    render = {"adj": self.adj_phrase, "noun": self.noun_phrase, "verb": self.verb_phrase}[kind]
    return render(term, deg, ctx), s, (term.id,), deg, term

  def _has(self, kind, lo, hi):
    return any(lo <= d.value <= hi for d in self.p.degrees[kind])

  def fill(self, frame: Frame, ctx, **slots) -> str:
    text = frame.template
    values = dict(ctx)
    values.update(slots)
    if "{a_A}" in text:
      a = slots["A"]
      values["a_A"] = ("an " if a[0].lower() in "aeiou" else "a ") + a
    return text.format(**values)

  def finish(self, text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    r = self.rng.random()
    if r < 0.3:
      text = text[0].upper() + text[1:]
    if self.rng.random() < 0.15:
      text += "."
    return text

  def outer_frame(self, kind: str, *, phrase_is_plain: bool, has_det: bool) -> Frame:
    cands = [f for f in self.p.frames[kind]
             if (phrase_is_plain or "attr" not in f.flags)
             and (not has_det or "nodet" not in f.flags)]
    return self.choice(cands)

  # -- categories -------------------------------------------------------------------------
  def single(self) -> FedRecord:
    ctx = self.subject()
    e = int(self.rng.integers(NUM_EMOTIONS))
    kind = self.choice(("adj", "adj", "adj", "noun", "noun", "verb", "verb", "facs"))
    phrase, s, tids, deg, term = self.graded_phrase(e, kind, ctx, p_bare=0.3)
    plain = kind == "adj" and not term.fixed and "{" not in term.text
    has_det = deg is not None and deg.kind == "noun"
    frame = self.outer_frame(kind, phrase_is_plain=plain, has_det=has_det)
    slot = {"adj": "A", "noun": "N", "verb": "V", "facs": "F"}[kind]
    text = self.fill(frame, ctx, **{slot: phrase})
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[e] = s
    return self.record(text, vec, "single", terms=tids, frame=frame.id)

  def mixture(self, n: int) -> FedRecord:
    ctx = self.subject()
    cands = [m for m in self.p.mixtures if m.n == n]
    mix = self.choice(cands)
    ftype = next(f for f in ("sym", "role", "prop", "more") if f in mix.flags)
    emos = self.emotions(n, allow_neutral=(n == 2 and self.rng.random() < 0.15))
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    slots, tids = {}, []
    mid = (0.55, 0.85)      # bare-slot terms: plain mid-strength words
    strong = (0.6, 1.0)     # "{A1+}" primaries: w >= 0.6 and d >= 0.65 -> s >= 0.557
    # Proportions (prop): shares from the template.
    shares = None
    if ftype == "prop":
      if "{p1}" in mix.template:
        if n == 2:
          p1 = int(self.rng.choice(np.arange(50, 95, 5)))
          shares = [p1, 100 - p1]
        else:
          while True:
            p = sorted(self.rng.choice(np.arange(10, 75, 5), size=2, replace=False))
            shares = sorted([p[0], p[1] - p[0], 100 - p[1]], reverse=True)
            if shares[2] >= 10 and len(set(shares)) == 3:
              break
        for i, p in enumerate(shares):
          slots[f"p{i + 1}"] = str(p)
        shares = [p / 100 for p in shares]
      elif "two parts" in mix.template:
        shares = [2 / 3, 1 / 3]
      elif "{p" not in mix.template:
        shares = [1 / n] * n
    for i, e in enumerate(emos, start=1):
      tmpl = mix.template
      if f"{{A{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "adj", ctx, p_bare=0.3)
        slots[f"A{i}"] = ph
      elif f"{{A{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "adj", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4)
        slots[f"A{i}+"] = ph
      elif f"{{N{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "noun", ctx, p_bare=0.3)
        slots[f"N{i}"] = ph
      elif f"{{N{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "noun", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4)
        slots[f"N{i}+"] = ph
      elif f"{{V{i}}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "verb", ctx, p_bare=0.3)
        slots[f"V{i}"] = ph
      elif f"{{V{i}+}}" in tmpl:
        ph, s, ti, _, _ = self.graded_phrase(e, "verb", ctx, lo=0.65, hi=1.0, w_range=strong, p_bare=0.4)
        slots[f"V{i}+"] = ph
      else:
        # bare term, minor degree word in front ({m2}/{q2}) or a share / role marker.
        noun = f"{{n{i}}}" in tmpl
        kind = "noun" if noun else "adj"
        t = (self.term(e, kind, plain_only=not noun, w_range=mid)
             or self.term(e, kind, plain_only=not noun) or self.choice([]))
        slots[f"{kind[0]}{i}"] = t.surface(ctx["Poss"])
        ti = (t.id,)
        d = None
        if f"{{m{i}}}" in tmpl or f"{{q{i}}}" in tmpl:
          lo, hi = (0.3, 0.45) if i == 2 else (0.1, 0.25)
          dk = "noun" if f"{{q{i}}}" in tmpl else "adj"
          deg = self.degree(dk, lo, hi, allow_bare=False)
          slots[f"{'q' if dk == 'noun' else 'm'}{i}"] = deg.text
          d = deg.value
        elif ftype == "role" and i == 1:
          d = PRIMARY
        elif ftype == "role" and "tinged with" in tmpl:
          d = 0.25
        elif ftype == "more":
          d = BARE if i == 1 else 0.4
        if shares is not None:
          s = float(shares[i - 1])          # proportions: the stated share
        elif d is not None:
          s = float(d)                      # role / more phrases: the marker's value
        else:
          s = term_intensity(t, None)       # "both X and Y": each at its bare strength
      vec[e] = max(vec[e], s)
      tids.extend(ti)
    phrase = self.fill(mix, ctx, **slots)
    outer = self.outer_frame(mix.kind, phrase_is_plain=False, has_det=True)
    slot = {"adj": "A", "noun": "N", "verb": "V"}[mix.kind]
    text = self.fill(outer, ctx, **{slot: phrase})
    order = tuple(emos) if ftype in ("role", "more") or (
        shares is not None and len(set(shares)) == n) else ()
    cat = "proportion" if ftype == "prop" else "mixture"
    return self.record(text, vec, cat, terms=tuple(tids), frame=f"{mix.id}+{outer.id}",
                       order=order)

  def negation(self, contrast: bool) -> FedRecord:
    ctx = self.subject()
    cands = [f for f in self.p.negations if ("contrast" in f.flags) == contrast]
    fr = self.choice(cands)
    x = self.emotions(1, allow_neutral=False)[0] if not contrast else None
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    slots, tids = {}, []
    if contrast:
      x, y = self.emotions(2, allow_neutral=False)
      if self.rng.random() < 0.2:   # "not angry, just tired": the asserted state is neutral
        y = 0
      if "{A}" in fr.template:
        ph, s, ti, _, _ = self.graded_phrase(y, "adj", ctx, p_bare=0.35)
        slots["A"] = ph
      elif "{a}" in fr.template:
        t = self.term(y, "adj", plain_only=True) or self.choice([])
        slots["a"] = t.surface(ctx["Poss"])
        s, ti = term_intensity(t, None), (t.id,)
      else:
        ph, s, ti, _, _ = self.graded_phrase(y, "noun", ctx, p_bare=0.35)
        slots["N"] = ph
      vec[y] = s
      tids.extend(ti)
    if "{xn}" in fr.template:
      t = self.term(x, "noun", graded_only=True) or self.choice([])
      slots["xn"] = t.surface(ctx["Poss"])
    else:
      t = self.term(x, "adj", plain_only=True) or self.choice([])
      slots["x"] = t.surface(ctx["Poss"])
    tids.insert(0, t.id)
    if not contrast:
      vec[0] = NEUTRAL_DEFAULT
    text = self.fill(fr, ctx, **slots)
    return self.record(text, vec, "contrast" if contrast else "negation", terms=tuple(tids),
                       frame=fr.id, negated=(x,))

  def content_free(self) -> FedRecord:
    ctx = self.subject()
    fr = self.choice(self.p.content_free)
    vec = np.zeros(NUM_EMOTIONS, np.float32)
    vec[0] = NEUTRAL_DEFAULT
    return self.record(self.fill(fr, ctx), vec, "content_free", frame=fr.id)

  def record(self, text, vec, category, *, terms=(), frame="", order=(), negated=()):
    vec = np.round(np.clip(vec, 0.0, 1.0), 4).astype(np.float32)
    n = int((vec > 0).sum())
    return FedRecord(self.finish(text), vec, self.split, category, n, n >= 2,
                     bool(negated), tuple(order), tuple(terms), frame, tuple(negated))

  def sample(self) -> FedRecord:
    while True:
      try:
        return self._sample()
      except _NoCandidate:
        continue

  def _sample(self) -> FedRecord:
    r = self.rng.random()
    if r < 0.40:
      return self.single()
    if r < 0.58:
      return self.mixture(2)
    if r < 0.66:
      return self.mixture(3)
    if r < 0.72:
      return self.negation(contrast=False)
    if r < 0.84:
      return self.negation(contrast=True)
    if r < 0.88:
      return self.content_free()
    return self.mixture(2)


def split_sizes(size: int, diagnostic: bool = True) -> dict[str, int]:
  """{split: records}: train / validation / test = 80 / 10 / 10 % of size (+ test_frames,
  the size of test, when diagnostic)."""
  n_val = int(round(size * SPLIT_FRACTIONS["validation"]))
  n_test = int(round(size * SPLIT_FRACTIONS["test"]))
  out = {"train": size - n_val - n_test, "validation": n_val, "test": n_test}
  if diagnostic:
    out["test_frames"] = n_test
  return out


def generate_split(split: str, n: int, seed: int = 0) -> list[FedRecord]:
  """n unique records of one split, deterministic in (seed, split)."""
  if split not in ALL_SPLITS:
    raise ValueError(f"unknown FED split {split!r}; use one of {ALL_SPLITS}")
  if n < 0:
    raise ValueError(f"FED split size must be >= 0, got {n}")
  pools = split_pools()[split]
  rng = np.random.default_rng([int(seed), ALL_SPLITS.index(split)])
  gen = _Gen(pools, rng, split)
  out, seen = [], set()
  attempts = 0
  while len(out) < n:
    attempts += 1
    if attempts > 50 * n + 1000:
      raise ValueError(f"FED split {split!r} cannot hold {n} unique prompts; lower --size")
    rec = gen.sample()
    key = rec.prompt.lower().rstrip(".")
    if key in seen:
      continue
    seen.add(key)
    out.append(rec)
  return out


def generate(size: int = DEFAULT_SIZE, seed: int = 0,
             diagnostic: bool = True) -> dict[str, list[FedRecord]]:
  """The corpus: {split: records}, train/validation/test = 80/10/10 of ``size`` (plus the
  diagnostic test_frames split when ``diagnostic``); deterministic in seed."""
  if size < 3:
    raise ValueError(f"FED --size must be >= 3 (one record per split), got {size}")
  return {s: generate_split(s, n, seed) for s, n in split_sizes(size, diagnostic).items()}


# ----------------------------------------------------------------------------------------
# Describing a given intensity vector (for the training pipeline: a prompt for s).
# ----------------------------------------------------------------------------------------

def describe(s, rng: np.random.Generator, split: str = "train") -> FedRecord:
  """A FED prompt for the emotion state s (8,), with the label FED's rules give it.

  Up to three emotions with s_k >= 0.05 are named (largest first) by a plain graded term
  (bare strength 0.7) and the degree word whose value is closest to s_k; an all-zero or
  neutral-only s gives a neutral description. The returned label is the prompt's own FED
  label, i.e. s rounded to the degree grid.
  """
  s = np.asarray(s, np.float32).reshape(-1)
  if s.shape[0] != NUM_EMOTIONS or not np.all(np.isfinite(s)):
    raise ValueError(f"describe: expected {NUM_EMOTIONS} finite intensities, got {s}")
  s = np.clip(s, 0.0, 1.0)
  pools = split_pools()[split]
  gen = _Gen(pools, rng, split)
  ctx = gen.subject()
  comps = [int(i) for i in np.argsort(-s, kind="stable") if s[i] >= 0.05][:3]
  if not comps:
    return gen.content_free()
  vec = np.zeros(NUM_EMOTIONS, np.float32)
  phrases, tids = [], []
  for e in comps:
    cands = [t for t in pools.terms[(e, "adj")] if not t.fixed and t.w == BARE
             and "{" not in t.text] or [t for t in pools.terms[(e, "adj")] if not t.fixed]
    t = gen.choice(cands)
    grid = [None] + [d for d in pools.degrees["adj"]]
    vals = np.array([BARE if d is None else d.value for d in grid])
    best = np.flatnonzero(np.abs(vals - s[e] * BARE / t.w) == np.abs(vals - s[e] * BARE / t.w).min())
    deg = grid[int(gen.rng.choice(best))]
    phrases.append(gen.adj_phrase(t, deg, ctx))
    vec[e] = term_intensity(t, None if deg is None else deg.value)
    tids.append(t.id)
  if len(phrases) == 1:
    phrase = phrases[0]
  elif len(phrases) == 2:
    phrase = f"{phrases[0]} and {phrases[1]}"
  else:
    phrase = f"{phrases[0]}, {phrases[1]} and {phrases[2]}"
  frame = gen.outer_frame("adj", phrase_is_plain=False, has_det=True)
  return gen.record(gen.fill(frame, ctx, A=phrase), vec,
                    "single" if len(comps) == 1 else "mixture", terms=tuple(tids), frame=frame.id)


# ----------------------------------------------------------------------------------------
# Vocabulary queries (tests, the `emotion` command's no-content check).
# ----------------------------------------------------------------------------------------

def heldout_terms(split: str) -> list[Term]:
  """Terms of the validation or test pool (never used by train)."""
  pools = split_pools()[split]
  return [t for group in pools.terms.values() for t in group]


_WORD = re.compile(r"[a-z][a-z'-]*")


@functools.lru_cache(maxsize=1)
def emotion_vocabulary() -> tuple[frozenset, tuple]:
  """(words, phrases) that carry emotion content in FED, over all splits: the emotion
  names, every one-word term, every multi-word term (as a phrase, "{Poss}" as her / his /
  their / its) and the participle of every facial action. Used only for the `emotion`
  command's "no emotion content" warning, never for the intensities."""
  words = set(EMOTIONS) | {"contemptuous", "fearful", "emotion", "emotional", "expression"}
  phrases = set()
  for t in TERMS:
    if t.kind == "facs":
      part, participle = [x.strip() for x in t.text.split("|")]
      phrases.add(f"{part} {participle}")
      first = participle.split()[0]
      if first not in ("at", "one", "in", "and"):
        words.add(first)
      continue
    if " " not in t.text:
      words.add(t.text.lower())
    else:
      for poss in ("her", "his", "their", "its", "my", "your"):
        phrases.add(t.text.lower().replace("{poss}", poss))
  return frozenset(words), tuple(sorted(phrases))


def contains_emotion_word(prompt: str) -> bool:
  """True when the prompt contains a FED emotion word or phrase (see emotion_vocabulary)."""
  words, phrases = emotion_vocabulary()
  low = " ".join(_WORD.findall(prompt.lower()))
  if any(w in words for w in low.split()):
    return True
  return any(re.search(rf"\b{re.escape(p)}\b", low) for p in phrases)


def write_jsonl(records: Sequence[FedRecord], path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: str) -> list[FedRecord]:
  out = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        out.append(FedRecord.from_json(json.loads(line)))
  return out
