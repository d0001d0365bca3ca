"""Every row format read into one Conversation, from real rows of the demo sets."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from hone.data.conversation import check_conversation
from hone.data.formats import FormatSpec, RowError, detect_format, to_conversation

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def rows(name: str) -> list[dict]:
    path = DATA / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def test_alpaca_instruction_input_output():
    row = next(r for r in rows("alpaca_en.json") if r["input"])
    conv = to_conversation(row, FormatSpec(), "f#1")
    assert [m.role for m in conv.messages] == ["user", "assistant"]
    assert conv.messages[0].content == f"{row['instruction']}\n{row['input']}"
    assert conv.messages[1].content == row["output"] and conv.source == "f#1"


def test_alpaca_system_and_history_pairs():
    a, b = rows("alpaca_en.json")[:2]
    row = {**b, "system": "Be brief.", "history": [[a["instruction"], a["output"]]]}
    conv = to_conversation(row, FormatSpec(), "")
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conv.system == "Be brief." and conv.messages[2].content == a["output"]
    assert check_conversation(conv) is None


def test_alpaca_chinese_row():
    row = rows("alpaca_zh.json")[0]
    conv = to_conversation(row, FormatSpec("alpaca"), "")
    assert conv.messages[-1].content == row["output"]


def test_sharegpt_tool_calls_and_tools_column():
    row = next(r for r in rows("glaive_toolcall_en.json")
               if any(t["from"] == "function_call" for t in r["conversations"]))
    spec = FormatSpec("sharegpt", {"messages": "conversations", "tools": "tools"})
    conv = to_conversation(row, spec, "")
    roles = [m.role for m in conv.messages]
    assert "tool" in roles and roles[0] == "user"
    call = next(m for m in conv.messages if m.tool_calls).tool_calls[0]
    assert isinstance(call.arguments, dict) and call.name
    assert conv.tools and all("name" in t for t in conv.tools)
    assert check_conversation(conv) is None


def test_sharegpt_unknown_role():
    with pytest.raises(RowError) as e:
        to_conversation({"conversations": [{"from": "wizard", "value": "x"}]}, FormatSpec("sharegpt"), "")
    assert e.value.reason == "unknown_role" and "wizard" in e.value.detail


def test_openai_messages_file_is_one_array():
    data = rows("messages.json")
    assert isinstance(data, list)
    conv = to_conversation(data[0], FormatSpec(), "")
    assert detect_format(data[0], FormatSpec()) == "messages"
    assert [m.role for m in conv.messages] == ["system", "user", "assistant"]


def test_openai_tool_calls_tool_role_and_content_parts():
    tool_row, parts_row = rows("tool_calls.jsonl")
    conv = to_conversation(tool_row, FormatSpec(), "")
    assert any(m.tool_calls for m in conv.messages) and any(m.role == "tool" for m in conv.messages)
    assert conv.tools[0]["type"] == "function"
    assert check_conversation(conv) is None
    conv = to_conversation(parts_row, FormatSpec(), "")
    assert conv.messages[0].content == parts_row["messages"][0]["content"][0]["text"]
    assert conv.messages[1].train is False and conv.messages[3].train is None


def test_query_response_history_system():
    row = rows("query_response.jsonl")[0]
    assert detect_format(row, FormatSpec()) == "query_response"
    conv = to_conversation(row, FormatSpec(), "")
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert conv.messages[-1].content == row["response"] and conv.messages[1].content == row["history"][0][0]


def test_text_for_pretraining():
    row = rows("c4.json")[0]
    assert detect_format(row, FormatSpec()) == "text"
    conv = to_conversation(row, FormatSpec(), "")
    assert conv.is_text and conv.text == row["text"]


def test_column_remap_in_dataset_info_style():
    row = {"question": "What is 2+2?", "answer": "4", "persona": "You are terse."}
    spec = FormatSpec("alpaca", {"prompt": "question", "response": "answer", "system": "persona"})
    conv = to_conversation(row, spec, "")
    assert [(m.role, m.content) for m in conv.messages] == [
        ("system", "You are terse."), ("user", "What is 2+2?"), ("assistant", "4")]


def test_forced_format_reports_missing_field():
    with pytest.raises(RowError) as e:
        to_conversation({"text": "hello"}, FormatSpec("alpaca"), "")
    assert e.value.reason == "missing_field" and "instruction" in e.value.detail


def test_llamafactory_value_parts_reasoning_tool_calls_and_loss_weight():
    sft = rows("lf_v1_sft_demo.jsonl")[0]
    conv = to_conversation(sft, FormatSpec(), "")
    assert conv.messages[1].content == sft["messages"][1]["content"][0]["value"]
    assert (conv.messages[0].loss_weight, conv.messages[1].loss_weight) == (0.0, 1.0)
    tool_row = rows("lf_reason_tool_use_demo.jsonl")[0]
    conv = to_conversation(tool_row, FormatSpec(), "")
    assert check_conversation(conv) is None and conv.tools[0]["function"]["name"] == "get_movie_details"
    call_turn, _, answer = conv.messages[2:5]
    assert call_turn.tool_calls[0].name == "get_movie_details"
    assert call_turn.tool_calls[0].arguments == {"title": "Inception"}
    reasoning = tool_row["messages"][4]["content"][0]["value"]
    assert answer.content.startswith("<think>\n" + reasoning.strip("\n") + "\n</think>\n\n")
    assert answer.content.endswith(tool_row["messages"][4]["content"][1]["value"])


def test_unsupported_parts_and_weights_are_named():
    image = {"messages": [{"role": "user", "content": [{"type": "image_url", "value": "1.jpg"}]},
                          {"role": "assistant", "content": "ok"}]}
    with pytest.raises(RowError) as e:
        to_conversation(image, FormatSpec(), "")
    assert e.value.reason == "bad_content" and "image_url" in e.value.detail and "part 0" in e.value.detail
    weird = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a",
                                                              "loss_weight": "heavy"}]}
    with pytest.raises(RowError) as e:
        to_conversation(weird, FormatSpec(), "")
    assert e.value.reason == "bad_weight" and "message 1" in e.value.detail
