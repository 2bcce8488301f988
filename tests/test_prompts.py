import pytest

from xcross_lib.data.prompts import HISTORY_SEPARATOR, PromptBuilder, clean_title

pytestmark = pytest.mark.unit

HISTORY = ["Stanley 16 oz hammer", "Tom &amp; Jerry tape measure", "DEWALT 20V MAX cordless drill kit"]


def test_clean_title_unescapes_html():
    assert clean_title("Tom &amp; Jerry&#39;s  saw") == "Tom & Jerry's saw"
    assert clean_title("A &amp;amp; B") == "A & B"  # escaped twice in some titles


def test_prompt_keeps_all_history_when_it_fits(minilm_tokenizer):
    build = PromptBuilder(minilm_tokenizer, max_length=128)
    p = build(HISTORY, "Bosch &quot;laser&quot; level")
    assert p.history == HISTORY_SEPARATOR.join(clean_title(t) for t in HISTORY)
    assert p.candidate == 'Bosch "laser" level' and p.n_history_items == 3
    ids = minilm_tokenizer(p.history, p.candidate)["input_ids"]
    assert ids[0] == minilm_tokenizer.cls_token_id and ids.count(minilm_tokenizer.sep_token_id) == 2


def test_truncation_drops_the_oldest_whole_items_and_never_the_candidate(minilm_tokenizer):
    candidate = "Milwaukee M18 fuel hammer drill with two batteries and charger"
    count = lambda text: len(minilm_tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    newest_two = HISTORY_SEPARATOR.join(clean_title(t) for t in HISTORY[1:])
    all_three = HISTORY_SEPARATOR.join(clean_title(t) for t in HISTORY)
    # a budget that fits the newest two items beside the candidate, but not all three
    max_length = 3 + count(candidate) + count(newest_two)
    assert 3 + count(candidate) + count(all_three) > max_length
    build = PromptBuilder(minilm_tokenizer, max_length=max_length)
    p = build(HISTORY, candidate)
    assert p.n_history_items == 2 and p.history == newest_two and p.candidate == candidate
    assert build.length(p) <= max_length
    # one token less: only the newest item remains
    p1 = PromptBuilder(minilm_tokenizer, max_length=max_length - 1)(HISTORY, candidate)
    assert p1.n_history_items == 1 and p1.history == clean_title(HISTORY[-1]) and p1.candidate == candidate


def test_every_prompt_fits_and_a_too_small_budget_is_refused(minilm_tokenizer):
    for max_length in range(16, 40):
        build = PromptBuilder(minilm_tokenizer, max_length)
        p = build(HISTORY * 3, "Gorilla glue")
        assert build.length(p) <= max_length and p.candidate == "Gorilla glue"
    with pytest.raises(ValueError, match="raise max_length"):
        PromptBuilder(minilm_tokenizer, 6)([HISTORY[0]], "a very long candidate title of many words")


def test_for_user_builds_one_prompt_per_candidate(minilm_tokenizer):
    titles = {0: "Saw", 1: "Drill", 2: "Glue &amp; tape", 3: "Level"}
    prompts = PromptBuilder(minilm_tokenizer, 64).for_user([0, 1], [2, 3], titles)
    assert [p.candidate for p in prompts] == ["Glue & tape", "Level"]
    assert {p.history for p in prompts} == {"Saw; Drill"}
