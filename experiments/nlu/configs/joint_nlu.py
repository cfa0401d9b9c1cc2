"""Joint intent + BIO entity (+ command) NLU: soft label masks, λ schedules, a BiLSTM tagger.

Run (from the repository root):
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py           # recipe
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py:long      # 100 epochs
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py:notes     # the notes
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py:ce        # baseline
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py:collapse  # the bug
  python -m experiments.run --config=experiments/nlu/configs/joint_nlu.py \\
      --config.data_dir=path/to/jsonl_or_jointbert_folder --config.default_lambda=0.5

Variants:
* ``recipe`` (default, meant for any dataset): finite (-1e9) masks of the labels never
  seen in training and of I-X after anything but B-X/I-X (constrained decoding at
  inference); a 2-layer BiLSTM of 256 units a direction over words + characters; plain
  cross-entropy on every head with λ 1 each (intent, entity, command and any other
  sentence-level field of the data), as Stack-Propagation and JointBERT weigh them. No
  class weights: on data the notes were not tuned on, the O = 0.1 focal loss tagged
  99.6 % of the tokens as entities (issue 21). Word dropout 0.1, and in training each
  word seen once in the training data becomes UNK with probability 0.5
  (``config.singleton_unk_rate``; Lample et al.'s singleton replacement), so the tagger
  learns to label words it has not seen from their characters and context. 40 epochs
  (8,200 updates on SNIPS), raised on a small training set to at least 4,000 updates
  (``config.min_train_steps``, also in ``notes``, ``ce`` and ``crf``; 0 turns it off)
  with about 20 evaluations (``config.evaluations_when_raised``). The intent and the
  tags are decoded together (``config.joint_decoding``): the pair with the highest
  product of the two heads' probabilities among those whose entity types the intent
  was seen with in training (``jaxloss.decoding.joint_decode``).
* ``long``: the recipe trained the way OpenSLU re-trains the from-scratch SNIPS models
  (long, with heavy dropout): 100 epochs (20,500 updates on SNIPS, 2.5 times the
  recipe's), word embeddings 256, a 2-layer BiLSTM of 128 units a direction, dropout 0.5.
* ``crf``: the recipe with a linear-chain CRF on the tags (BiLSTM-CNN-CRF): learned
  tag-to-tag transitions, the sequence-level negative log-likelihood per token
  (``jaxloss.losses.crf_sequence_loss``) under the same masks, CRF Viterbi at inference.
* ``notes``: the practitioners' notes, kept for the record (20 epochs, as ``ce``): a
  1-layer BiLSTM of 128,
  λ intent 0.3, entity warmed up 0.3 → 0.4 → 0.5 over epochs 0, 1, 2+, command 0.2;
  focal entity loss (α = 0.25, γ = 2) with class weights O = 0.1 and entity tags from 1
  up to 5 (square-root inverse frequency).
* ``ce``: ``notes`` with plain, unweighted cross-entropy on the entity head (the notes,
  ``ce`` and ``collapse`` have no singleton replacement).
* ``collapse``: the recipe before its fixes -- additive -inf masks with the token losses
  of all positions averaged under the token mask, entity λ 0.8 from the start, no O
  down-weighting; reproduces the failure (NaN loss from the first step).
* ``smoke``: the recipe on 512 sentences, a small 1-layer model, two epochs (the tests);
  ``notes_smoke``: the same for ``notes``.
* ``jointbert``: JointBERT on a pretrained encoder (``config.encoder``, default
  ``all-MiniLM-L6-v2`` from ``../shared/models``), fine-tuned: CE on the intent (pooler)
  and on each word's tag at its first sub-word, λ 1 : 1, AdamW 1e-4 with warm-up and
  linear decay, 4 epochs; ``jointbert_frozen`` trains the heads (10 epochs, LR 2e-3)
  on features the frozen encoder computed once;
  ``jointbert_smoke`` is one encoder layer, 256 sentences, one epoch (the tests).

Data: ``config.data_dir`` is the folder of a dataset in the JointBERT layout
(``{train,dev,test}/seq.in``, ``seq.out``, ``label`` and optionally
``intent_label.txt`` / ``slot_label.txt``) or the JSONL layout (``train.jsonl`` ... with
``tokens``, ``tags`` and any sentence-level label fields); default
``../shared/data/snips`` beside the repository.
"""

import ml_collections

from experiments.configs.runtime import add_runtime

VARIANTS = ("recipe", "long", "crf", "notes", "ce", "collapse", "smoke", "notes_smoke",
            "jointbert", "jointbert_frozen", "jointbert_smoke")


def get_config(arg=None):
  variant = arg or "recipe"
  if variant not in VARIANTS:
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
  c = ml_collections.ConfigDict()
  c.name = f"joint_nlu_{variant}"
  c.trainer = "nlu"  # experiments/nlu
  c.seed = 0

  # Data (the joint_nlu TFDS builder).
  c.data_dir = ml_collections.config_dict.placeholder(str)  # None: ../shared/data/snips
  c.tfds_data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS default
  c.layout = "auto"  # "jointbert", "jsonl" or "auto"
  c.max_train_examples = ml_collections.config_dict.placeholder(int)
  c.max_eval_examples = ml_collections.config_dict.placeholder(int)
  c.vocab_min_count = 1
  c.max_len = ml_collections.config_dict.placeholder(int)  # None: the longest sentence
  c.max_word_len = 20  # characters a word for the character CNN

  # Model: word embedding + character CNN, BiLSTM, sentence heads, tag head.
  c.embed_dim = 128
  c.char_embed_dim = 32
  c.char_features = 64
  c.hidden = 256
  c.num_layers = 2
  c.dropout_rate = 0.3
  c.word_dropout_rate = 0.1  # words replaced by UNK in training (unseen-word practice)
  # The rate at which words seen once in training are also replaced by UNK in training
  # (Lample et al.'s singleton replacement, 0.5 in their NER tagger); 0 or None: off.
  # From-scratch tagger only: with config.encoder it has no effect, as word dropout.
  # A typed placeholder, then 0.5: a variant can set it back to None.
  c.singleton_unk_rate = ml_collections.config_dict.placeholder(float)
  c.singleton_unk_rate = 0.5
  c.attention_heads = 0  # > 0: self-attention over the BiLSTM states for the tag head
  # Stack-Propagation's token-level intent: every token predicts each sentence label,
  # the sentence's logits are the tokens' soft vote, and the tag head reads the
  # tokens' label probabilities.
  c.token_level = False
  # Stack-Propagation's decoders: None, or the width of unidirectional LSTM decoders for
  # the tags (and, with token_level, the token-level labels) that read the previous
  # token's label, gold with probability teacher_forcing a batch in training (None:
  # 0.9), their own greedy choice otherwise and in evaluation.
  c.decoder_hidden = ml_collections.config_dict.placeholder(int)
  c.teacher_forcing = ml_collections.config_dict.placeholder(float)

  # A pretrained encoder instead of the BiLSTM (JointBERT): a Hugging Face folder, or
  # the name of one in ../shared/models (e.g. "all-MiniLM-L6-v2"); None: from scratch.
  c.encoder = ml_collections.config_dict.placeholder(str)
  c.encoder_num_layers = ml_collections.config_dict.placeholder(int)  # None: all
  c.encoder_max_length = 128  # sub-words a sentence, special tokens included
  # Padded widths of a training batch: words from scratch, sub-words with an encoder.
  c.sequence_buckets = (16, 24, 32, 48, 64, 96, 128)
  c.freeze_encoder = False  # train the heads only
  c.cache_features = True  # frozen: run the encoder once, train the heads on its features
  c.layer_decay = 1.0  # LR factor per layer below the top (1: none)
  # The encoder's LR as a fraction of the heads' (config.learning_rate); 1: one LR.
  c.encoder_lr_scale = 1.0
  c.sentence_pooling = "auto"  # "pooler", "cls", "mean"; auto: pooler if it has one
  c.head_dropout_rate = 0.1

  # Optimisation: AdamW, linear warm-up then cosine decay (in epochs); with an encoder,
  # linear warm-up then linear decay to 0 (BERT's schedule).
  # 40 epochs: on SNIPS (8,200 updates) 20 gave 0.8 slot F1 and 1.9 sentence accuracy
  # less (two seeds each; docs/results/nlu.md).
  c.num_epochs = 40
  # On a small training set the epochs are raised to reach this many updates (40 epochs
  # of SNIPS are 8,200), and Dev and Test evaluated about evaluations_when_raised
  # times; 0: off.
  c.min_train_steps = 4000
  c.evaluations_when_raised = 20
  c.batch_size = 64
  c.optimizer = "adamw"
  c.learning_rate = 2e-3
  c.warmup_epochs = 1.0
  c.weight_decay = 1e-4
  c.max_grad_norm = 5.0
  # Evaluate an exponential moving average of the parameters with this decay (Polyak
  # averaging; the loop keeps it in the train state); None: the parameters themselves.
  c.ema_decay = ml_collections.config_dict.placeholder(float)

  # Loss: Σ_f λ_f CE(sentence head f) + λ_entity · tagging loss. A λ is a number or
  # per-epoch values "a,b,c" (value k during epoch k, the last one from then on).
  # (entity is a string so that a warm-up "a,b,c" can be given on the command line.)
  c.lambdas = ml_collections.ConfigDict({"intent": 1.0, "entity": "1.0",
                                         "command": 1.0})
  # The λ of a sentence-level label field of the data that c.lambdas does not name (a
  # JSONL set with e.g. a "scenario" field gets a head with this weight).
  c.default_lambda = 1.0
  c.entity_loss = "ce"  # "focal" (the notes' entity loss) or "crf"
  c.entity_gamma = 2.0
  c.entity_alpha = 0.25
  c.entity_class_weights = False  # O = entity_o_weight, tags 1 .. class_weight_cap
  c.entity_o_weight = 0.1
  c.class_weight_cap = 5.0  # the largest entity tag weight
  c.mask_fill = "finite"  # or "neg_inf": the pre-fix recipe (reproduces the NaN)
  c.constrained_decoding = True  # mask I-X after O in training; BIO Viterbi at inference
  # Decode tags from z - τ·log(class weight): τ = 1 undoes the shift a class-weighted loss
  # puts into the logits (Menon et al., ICLR 2021). The reported metrics use this τ; a
  # class-weighted run also logs the τ = 1 metrics under "tau1/".
  c.decode_weight_tau = 0.0
  # Decode the intent (or the data's first label field) and the tags together: the
  # (label, valid tag sequence) pair with the highest product of the two heads'
  # probabilities, each label allowing only the entity types seen with it in training
  # (jaxloss.decoding.joint_decode). The independent decoding (argmax label, Viterbi
  # tags) is logged beside it under "independent/". Needs the MEMM tagger (constrained
  # decoding, no CRF, no decoder). None or False: each head decoded on its own (None is
  # what a config from before this field trained and decoded).
  c.joint_decoding = ml_collections.config_dict.placeholder(bool)
  c.joint_decoding = True
  # A label forbids an entity type it was never seen with only when its training
  # sentences are evidence: n_label · (share of sentences with that type) >= this
  # (jaxloss.decoding.label_tag_mask's min_expected; 3: the rule of three). So a rare
  # intent keeps the types its few sentences did not show. On SNIPS the mask is the
  # same as with 0. None or 0: every pair not seen in training is forbidden (None is
  # what a config from before this field decoded). Decoding only, so a re-run of a
  # workdir may change it (runtime_fields).
  c.label_tag_min_expected = ml_collections.config_dict.placeholder(float)
  c.label_tag_min_expected = 3.0
  c.runtime_fields = ("label_tag_min_expected",)

  # A checkpoint is written at the end of every epoch.
  add_runtime(c, eval_batch_size=512, keep_checkpoints=2, checkpoint_every_steps=10_000)

  if variant in ("notes", "notes_smoke", "ce", "collapse", "crf") or (
      variant.startswith("jointbert")):
    # The records (the notes, JointBERT) decode each head on its own, as measured; the
    # CRF's sequence scores are not a tag distribution to multiply with the intent's.
    c.joint_decoding = None
  if variant in ("notes", "notes_smoke", "ce", "collapse"):
    # The practitioners' notes: a smaller BiLSTM, λ intent 0.3, entity warmed up
    # 0.3 -> 0.4 -> 0.5, command 0.2, focal entities with O = 0.1 and tag weights to 5.
    c.hidden = 128
    c.num_layers = 1
    c.num_epochs = 20  # as measured for the record
    c.lambdas = ml_collections.ConfigDict({"intent": 0.3, "entity": "0.3,0.4,0.5",
                                           "command": 0.2})
    c.default_lambda = 0.2
    c.entity_loss = "focal"
    c.entity_class_weights = True
    c.singleton_unk_rate = None  # the notes' tagger had none
  if variant == "long":
    c.embed_dim = 256
    c.hidden = 128
    c.dropout_rate = 0.5
    c.num_epochs = 100
    c.evaluations_when_raised = None  # about num_epochs evaluations, as measured
  if variant == "crf":
    c.entity_loss = "crf"
  if variant == "ce":  # the notes' model and λ, plain CE on the tags
    c.entity_loss = "ce"
    c.entity_class_weights = False
  elif variant == "collapse":
    c.mask_fill = "neg_inf"
    c.lambdas.entity = "0.8"
    c.entity_loss = "ce"
    c.entity_class_weights = False
    c.num_epochs = 3
  elif variant.startswith("jointbert"):
    # JointBERT (Chen et al. 2019): CE on intent and on each word's first sub-word,
    # λ 1 : 1, AdamW, dropout 0.1; MiniLM in place of BERT-base.
    c.encoder = "all-MiniLM-L6-v2"
    c.singleton_unk_rate = None  # sub-words, no word vocabulary
    c.entity_loss = "ce"
    c.entity_class_weights = False
    c.lambdas = ml_collections.ConfigDict({"intent": 1.0, "entity": "1.0",
                                           "command": 1.0})
    c.default_lambda = 1.0
    c.batch_size = 32
    c.learning_rate = 1e-4
    c.weight_decay = 0.01
    c.max_grad_norm = 1.0
    c.warmup_epochs = 0.1
    c.num_epochs = 4
    c.eval_batch_size = 256
    if variant == "jointbert_frozen":  # the heads on the frozen encoder's features
      c.freeze_encoder = True
      c.learning_rate = 2e-3
      c.num_epochs = 10
      c.train_input = "host"  # features stay on the host; batches gathered there
    elif variant == "jointbert_smoke":
      c.encoder_num_layers = 1
      c.max_train_examples = 256
      c.max_eval_examples = 64
      c.num_epochs = 1
      c.encoder_data_vocabulary = True  # a small embedding table (and checkpoint)
  elif variant in ("smoke", "notes_smoke"):
    c.num_layers = 1
    c.max_train_examples = 512
    c.max_eval_examples = 128
    c.embed_dim = 32
    c.char_embed_dim = 16
    c.char_features = 16
    c.hidden = 32
    c.num_epochs = 2
  if variant.startswith("jointbert") or variant in ("collapse", "smoke", "notes_smoke"):
    c.min_train_steps = 0  # fine-tuning keeps its epochs; the tests' runs stay short
  return c
