"""The built-in probe datasets (``circuit probes init`` writes them for editing).

Each probe is binary: label 1 = the ``positive`` list, label 0 = the ``negative`` one; 15 prompts
per class (30 per probe). Categories: syntactic, semantic, decision. ``paired`` probes are minimal
pairs (positive[i] and negative[i] differ only in the probed property); they are stored with
``pair`` ids and cross-validated with both members of a pair in the same fold, so a probe cannot
score by memorising a pair partner (which would push accuracy below chance).
"""

from __future__ import annotations

BUILTIN: list[dict] = [
    {
        "name": "question_vs_statement", "paired": True, "probe_category": "syntactic",
        "description": "is the sentence a question?", "labels": ["statement", "question"],
        "positive": [
            "Where did you leave the keys", "Is the shop open on Sunday", "What time does the train leave",
            "Can you hear the music", "Why is the sky blue", "Who wrote this letter", "Did she call you back",
            "How many apples are left", "Are the children asleep", "When does the movie start",
            "Have you seen my jacket", "Which road goes to the lake", "Does the bus stop here",
            "Will it snow tonight", "Could you open the window",
        ],
        "negative": [
            "You left the keys on the table", "The shop is open on Sunday", "The train leaves at noon",
            "I can hear the music", "The sky is blue today", "My uncle wrote this letter", "She called you back",
            "Three apples are left", "The children are asleep", "The movie starts at eight",
            "I have seen your jacket", "This road goes to the lake", "The bus stops here",
            "It will snow tonight", "He opened the window",
        ],
    },
    {
        "name": "past_vs_present", "paired": True, "probe_category": "syntactic",
        "description": "is the verb in the past tense?", "labels": ["present", "past"],
        "positive": [
            "She walked to school", "They played football", "The dog barked loudly", "We cooked dinner together",
            "He painted the fence", "The baby cried all night", "I finished my homework", "The river flooded the town",
            "My father fixed the car", "The students listened carefully", "The wind blew the door open",
            "She wrote a long letter", "We watched the sunset", "The team won the match", "He forgot his umbrella",
        ],
        "negative": [
            "She walks to school", "They play football", "The dog barks loudly", "We cook dinner together",
            "He paints the fence", "The baby cries all night", "I finish my homework", "The river floods the town",
            "My father fixes the car", "The students listen carefully", "The wind blows the door open",
            "She writes a long letter", "We watch the sunset", "The team wins the match", "He forgets his umbrella",
        ],
    },
    {
        "name": "plural_vs_singular", "paired": True, "probe_category": "syntactic",
        "description": "is the subject plural?", "labels": ["singular", "plural"],
        "positive": [
            "The cats sleep on the sofa", "The birds sing in the morning", "My friends live nearby",
            "The cars are parked outside", "The teachers were tired", "Those books belong to me",
            "The flowers grow quickly", "The horses run across the field", "The doctors work late",
            "These apples taste sweet", "The children laugh loudly", "The trees lose their leaves",
            "The engines make a noise", "Our neighbors have a garden", "The boxes are heavy",
        ],
        "negative": [
            "The cat sleeps on the sofa", "The bird sings in the morning", "My friend lives nearby",
            "The car is parked outside", "The teacher was tired", "That book belongs to me",
            "The flower grows quickly", "The horse runs across the field", "The doctor works late",
            "This apple tastes sweet", "The child laughs loudly", "The tree loses its leaves",
            "The engine makes a noise", "Our neighbor has a garden", "The box is heavy",
        ],
    },
    {
        "name": "animal_vs_vehicle", "paired": True, "probe_category": "semantic",
        "description": "is the sentence about an animal (vs a vehicle)?", "labels": ["vehicle", "animal"],
        "positive": [
            "The tiger moved through the grass", "A dolphin jumped beside us", "The elephant drank from the river",
            "An owl watched from the branch", "The rabbit hid in the garden", "A wolf howled at night",
            "The horse galloped across the field", "A frog sat on the leaf", "The eagle circled overhead",
            "A bear searched for honey", "The monkey climbed the tree", "A snake slid under the rock",
            "The camel crossed the desert", "A fox ran past the fence", "The whale surfaced near the boat",
        ],
        "negative": [
            "The truck moved through the street", "A motorboat sped beside us", "The bus stopped by the river",
            "An airplane flew over the city", "The bicycle leaned on the wall", "A train rumbled at night",
            "The tractor drove across the field", "A scooter sat on the pavement", "The helicopter circled overhead",
            "A van searched for parking", "The car climbed the hill", "A taxi waited under the bridge",
            "The ship crossed the ocean", "A motorcycle ran past the fence", "The submarine surfaced near the boat",
        ],
    },
    {
        "name": "positive_vs_negative", "paired": True, "probe_category": "semantic",
        "description": "is the sentiment positive?", "labels": ["negative", "positive"],
        "positive": [
            "I loved every minute of the concert", "The food was delicious and fresh", "What a wonderful day",
            "She was thrilled with the gift", "The service was excellent", "This book is a delight",
            "We had a fantastic holiday", "The view is absolutely beautiful", "He is a kind and generous man",
            "The results were great", "I am so happy for you", "The hotel was clean and comfortable",
            "That was a brilliant idea", "The movie made me smile", "Our team did an amazing job",
        ],
        "negative": [
            "I hated every minute of the concert", "The food was stale and cold", "What a miserable day",
            "She was upset with the gift", "The service was terrible", "This book is a bore",
            "We had an awful holiday", "The view is completely ruined", "He is a cruel and selfish man",
            "The results were disappointing", "I am so sad for you", "The hotel was dirty and noisy",
            "That was a stupid idea", "The movie made me angry", "Our team did a horrible job",
        ],
    },
    {
        "name": "science_vs_sports", "probe_category": "semantic",
        "description": "is the topic science (vs sports)?", "labels": ["sports", "science"],
        "positive": [
            "The experiment measured the speed of light", "Cells divide during mitosis",
            "The chemist mixed two acids", "Electrons orbit the nucleus", "The telescope found a new galaxy",
            "DNA carries genetic information", "The physicist studied quantum fields",
            "Photosynthesis converts light into energy", "The vaccine trial showed strong results",
            "Gravity bends the path of light", "The lab analyzed the rock samples", "Atoms bond to form molecules",
            "The biologist observed the bacteria", "The reaction released heat", "Neurons send electrical signals",
        ],
        "negative": [
            "The striker scored in the final minute", "The runner broke the world record",
            "The goalkeeper saved a penalty", "The team won the championship", "The tennis match went to five sets",
            "The boxer won by knockout", "The coach changed the lineup", "The swimmer took the gold medal",
            "The pitcher threw a perfect game", "The cyclist climbed the mountain stage",
            "The referee showed a red card", "The quarterback threw a long pass", "The golfer sank the putt",
            "The skier raced down the slope", "The fans cheered the home team",
        ],
    },
    {
        "name": "tool_vs_no_tool", "probe_category": "decision",
        "description": "does the request need an external tool?", "labels": ["no_tool", "tool"],
        "positive": [
            "What's the weather in Paris right now?", "Search the web for today's headlines.",
            "What is 4821 times 377?", "Send an email to Alice about the meeting.",
            "Remind me to call mom at 6pm.", "What is Apple's stock price today?",
            "Look up the opening hours of the museum.", "Will it rain in Tokyo tomorrow?",
            "Book a table for two at eight.", "Convert 250 dollars to euros at today's rate.",
            "Find flights from Boston to Denver next week.", "Set an alarm for 7am.",
            "What is the current exchange rate for yen?", "Check my calendar for Friday.",
            "Get the latest football scores.",
        ],
        "negative": [
            "Explain what a metaphor is.", "Write a short poem about the sea.", "What does empathy mean?",
            "Tell me a story about a brave knight.", "Give me tips for sleeping better.",
            "Why do people enjoy music?", "Describe a sunset to a child.", "What is the meaning of friendship?",
            "Write a haiku about autumn.", "Explain gravity in simple terms.", "How can I stay motivated?",
            "Tell me a joke about cats.", "What makes a good leader?", "Summarize the idea of democracy.",
            "Suggest a name for a pet turtle.",
        ],
    },
    {
        "name": "arithmetic_vs_factual", "probe_category": "decision",
        "description": "is the prompt an arithmetic problem (vs a factual question)?",
        "labels": ["factual", "arithmetic"],
        "positive": [
            "What is 17 plus 25?", "12 * 8 =", "What is 100 minus 37?", "45 + 19 =", "What is 9 times 7?",
            "81 / 9 =", "What is 64 divided by 8?", "23 - 11 =", "What is 15 squared?", "6 * 7 =",
            "What is half of 90?", "38 + 47 =", "What is 3 cubed?", "56 - 29 =", "What is 11 times 12?",
        ],
        "negative": [
            "What is the capital of France?", "Who wrote Hamlet?", "What is the largest ocean?",
            "Which planet is closest to the sun?", "Who painted the Mona Lisa?", "What language is spoken in Brazil?",
            "What is the tallest mountain?", "Who discovered penicillin?", "What is the currency of Japan?",
            "Which river flows through Cairo?", "Who was the first person on the moon?",
            "What is the chemical symbol for gold?", "Which country has the most people?",
            "What is the longest river?", "Who invented the telephone?",
        ],
    },
]
