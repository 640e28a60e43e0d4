"""Each template family on fixed seeds, against golden outputs written out by hand."""

from cauldron.templates import (
    PROMPT_LISTS,
    captioning,
    chart_table_qa,
    document_vqa,
    multiple_choice,
    row_rng,
    screenshot_to_code,
    short_answer_vqa,
    text_conversation,
    text_instruction,
    transcription,
    yes_no,
)


def rng():
    return row_rng(0, "golden", 1)


def test_short_answer_vqa_uses_majority_answer_suffix_and_casing():
    assert short_answer_vqa("what color is the bus?", ["red", "Red ", "blue", "red", "dark red"], rng()) == (
        "What color is the bus?\nBrief answer, please.",
        "Red.",
    )


def test_short_answer_vqa_breaks_ties_with_the_seed():
    assert short_answer_vqa("how many dogs?", ["2", "two", "2", "two"], rng()) == (
        "How many dogs?\nGive a short answer.",
        "Two.",
    )


def test_document_vqa_adds_brevity_hint_and_keeps_answer_casing():
    assert document_vqa("what is the title of the form?", ["ACME Corp.", "acme corp.", "Invoice"], rng()) == (
        "What is the title of the form?\nThe answer should be short and exact.",
        "ACME Corp.",
    )


def test_multiple_choice_format():
    assert multiple_choice("which organ pumps blood?", ["lungs", "heart", "liver"], 1, rng()) == (
        "Question: Which organ pumps blood?\nChoices:\nA. lungs\nB. heart\nC. liver\nAnswer with the letter.",
        "Answer: B",
    )


def test_multiple_choice_with_context_and_seeded_shuffle():
    user, assistant = multiple_choice(
        "which organ pumps blood?",
        ["lungs", "heart", "liver", "skin"],
        "heart",
        rng(),
        context="Think about circulation.",
        shuffle=True,
    )
    assert user == (
        "Context: Think about circulation.\nQuestion: Which organ pumps blood?\nChoices:\n"
        "A. heart\nB. liver\nC. lungs\nD. skin\nAnswer with the letter."
    )
    assert assistant == "Answer: A"


def test_yes_no_verification():
    assert yes_no("the left image contains two dogs", True, rng()) == (
        "Check this claim against the image: The left image contains two dogs.\nAnswer yes or no.",
        "Yes.",
    )
    assert yes_no("There is a cat", False, row_rng(3, "x")) == (
        "Is this statement true for the image? There is a cat.\nAnswer yes or no.",
        "No.",
    )


def test_captioning_draws_from_the_dataset_prompt_list():
    assert captioning("a red bus parked next to a sign reading STOP", PROMPT_LISTS["textcaps"], rng()) == (
        "Give a one-sentence description of the image and its text.",
        "A red bus parked next to a sign reading STOP.",
    )


def test_transcription_keeps_text_and_line_breaks():
    assert transcription("Dear Sir,\n  thank you   for the letter", PROMPT_LISTS["handwriting"], rng()) == (
        "What does this handwriting say?",
        "Dear Sir,\nthank you for the letter",
    )


def test_chart_table_qa():
    assert chart_table_qa("what was the revenue in 2019?", 42.5, rng()) == (
        "What was the revenue in 2019?\nRead the answer off the figure.",
        "42.5",
    )


def test_screenshot_to_code_keeps_indentation():
    assert screenshot_to_code("<html>\n  <body>Hi</body>\n</html>\n", rng()) == (
        "Write HTML code that looks like this image.",
        "<html>\n  <body>Hi</body>\n</html>",
    )


def test_text_conversation_sharegpt_with_system_and_dangling_user():
    messages = [
        {"from": "system", "value": "You are terse."},
        {"from": "human", "value": "Hi?"},
        {"from": "gpt", "value": "Hello."},
        {"from": "human", "value": "2+2?"},
        {"from": "gpt", "value": "4"},
        {"from": "human", "value": "dangling"},
    ]
    assert text_conversation(messages) == [("You are terse.\n\nHi?", "Hello."), ("2+2?", "4")]


def test_text_conversation_openai_roles_and_alternating_strings():
    assert text_conversation([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]) == [("a", "b")]
    assert text_conversation(["q1", "a1", "q2", "a2", "q3"]) == [("q1", "a1"), ("q2", "a2")]


def test_text_instruction():
    assert text_instruction("Summarise.", "Short.", context="Long text") == [("Summarise.\n\nLong text", "Short.")]
    assert text_instruction("Add 2 and 2.", "4", context="") == [("Add 2 and 2.", "4")]


def test_row_rng_is_stable_and_keyed():
    assert row_rng(0, "a", 1).random() == row_rng(0, "a", 1).random()
    assert row_rng(0, "a", 1).random() != row_rng(0, "a", 2).random()
    assert row_rng(0, "a", 1).random() != row_rng(1, "a", 1).random()
