"""Built-in declarative templates (register_template calls only).

Each one names the published chat template it reproduces; tests/unit/test_templates_parity.py renders
those real templates (stored in tests/fixtures/chat_templates, with their provenance) and compares. Where a
model's template writes no end-of-turn after a reply (chatglm3, minicpm, baichuan2), the reply ends with eos
so the model learns to stop; that eos is the one deliberate difference from the published text. Where a
template rewrites earlier turns (Qwen3 drops old reasoning, Mistral v0.3 moves the system prompt), every
reply of a training row is written as the template renders it when that reply is generated, as `auto` does.
"""
from .base import register_template
from .declarative import DeclarativeTemplate, ToolFormat

_BOS, _EOS = ["bos_token_id"], ["eos_token_id"]
_CHATML_SYSTEM = "<|im_start|>system\n{{SYSTEM}}<|im_end|>\n"
_CHATML_PROMPT = "<|im_start|>user\n{{QUERY}}<|im_end|>\n<|im_start|>assistant\n"
_TOOLS_BODY = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
               "with function signatures within <tools></tools> XML tags:\n<tools>{{TOOLS}}\n</tools>\n\nFor each "
               "function call, return a json object with function name and arguments within <tool_call></tool_call>"
               " XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n"
               "</tool_call><|im_end|>\n")

# Qwen2.5-Instruct: tools follow the (default) system prompt; string arguments go through tojson too.
_QWEN25_TOOLS = ToolFormat(system_prefix=("<|im_start|>system\n{{SYSTEM}}\n\n" + _TOOLS_BODY,),
                           raw_string_arguments=False)
# Qwen3 (and plain chatml with tools): no default system; the tools block stands alone without one.
_QWEN3_TOOLS = ToolFormat(system_prefix=("<|im_start|>system\n{{SYSTEM}}\n\n" + _TOOLS_BODY,),
                          prefix=("<|im_start|>system\n" + _TOOLS_BODY,))

register_template("chatml", DeclarativeTemplate(
    (), _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix=_CHATML_SYSTEM, stop_words=["<|im_end|>"],
    tools=_QWEN3_TOOLS, name="chatml"))

register_template("qwen", DeclarativeTemplate(
    (), _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix=_CHATML_SYSTEM, stop_words=["<|im_end|>"],
    default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
    tools=_QWEN25_TOOLS, name="qwen"))

register_template("qwen3", DeclarativeTemplate(
    (), _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix=_CHATML_SYSTEM, stop_words=["<|im_end|>"],
    tools=_QWEN3_TOOLS, thinking=True, name="qwen3"))

register_template("smollm2", DeclarativeTemplate(
    (), _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix=_CHATML_SYSTEM, stop_words=["<|im_end|>"],
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face", name="smollm2"))

# Yi-1.5-Chat: the system prompt is written bare, before the first ChatML turn.
register_template("yi", DeclarativeTemplate(
    (), _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix="{{SYSTEM}}", stop_words=["<|im_end|>"], name="yi"))

register_template("internlm2", DeclarativeTemplate(
    [_BOS], _CHATML_PROMPT, (), "<|im_end|>\n", system_prefix=[_BOS, _CHATML_SYSTEM],
    stop_words=["<|im_end|>"], name="internlm2"))

# Llama-2-chat: the system block opens the first user turn, and each turn is trimmed as a whole.
register_template("llama2", DeclarativeTemplate(
    [_BOS, "[INST] "], "{{QUERY}} [/INST]", [_BOS, "[INST] "], [" ", _EOS], response_prefix=" ",
    system_in_query="<<SYS>>\n{{SYSTEM}}\n<</SYS>>\n\n{{QUERY}}", system_query="first", trim=("user", "assistant"),
    name="llama2"))

_L3_HEAD = "<|start_header_id|>system<|end_header_id|>\n\n"
_L3_PROMPT = ("<|start_header_id|>user<|end_header_id|>\n\n{{QUERY}}<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n")
_L3_ROLES = ("system", "user", "assistant")
register_template("llama3", DeclarativeTemplate(
    [_BOS], _L3_PROMPT, (), "<|eot_id|>", system_prefix=[_BOS, _L3_HEAD + "{{SYSTEM}}<|eot_id|>"],
    stop_words=["<|eot_id|>"], trim=_L3_ROLES, name="llama3"))

# Llama 3.1 / 3.2 always open with a system block that states the knowledge cut-off and a date.
register_template("llama3_1", DeclarativeTemplate(
    [_BOS], _L3_PROMPT, (), "<|eot_id|>", default_system="", stop_words=["<|eot_id|>", "<|eom_id|>"],
    system_prefix=[_BOS, _L3_HEAD + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                   "{{SYSTEM}}<|eot_id|>"], trim=_L3_ROLES, name="llama3_1"))

register_template("llama3_2", DeclarativeTemplate(
    [_BOS], _L3_PROMPT, (), "<|eot_id|>", default_system="", stop_words=["<|eot_id|>", "<|eom_id|>"],
    system_prefix=[_BOS, _L3_HEAD + "Cutting Knowledge Date: December 2023\nToday Date: {{DATE}}\n\n"
                   "{{SYSTEM}}<|eot_id|>"], trim=_L3_ROLES, name="llama3_2"))

# Mistral-7B-Instruct v0.1/v0.2 as published today ("v1"): a space before every [INST] and every reply.
register_template("mistral", DeclarativeTemplate(
    [_BOS, " [INST] "], "{{QUERY}} [/INST]", " [INST] ", [_EOS], response_prefix=" ",
    system_prefix=[_BOS, " [INST] {{SYSTEM}}\n\n"], name="mistral"))

# Mistral v0.3 ("v3"): replies trimmed after one space; the system prompt goes in the last user turn.
register_template("mistral_v3", DeclarativeTemplate(
    [_BOS], "[INST] {{QUERY}}[/INST]", (), [_EOS], response_prefix=" ", trim=("assistant",),
    system_in_query="{{SYSTEM}}\n\n{{QUERY}}", name="mistral_v3"))

# Mistral-Nemo ("v3-tekken"): no spaces around [INST] or the reply.
register_template("mistral_nemo", DeclarativeTemplate(
    [_BOS], "[INST]{{QUERY}}[/INST]", (), [_EOS], system_in_query="{{SYSTEM}}\n\n{{QUERY}}",
    name="mistral_nemo"))

# Gemma 1/2 have no system role (their template raises); Gemma 3's puts it in the first user turn.
register_template("gemma", DeclarativeTemplate(
    [_BOS, "<start_of_turn>user\n"], "{{QUERY}}<end_of_turn>\n<start_of_turn>model\n", "<start_of_turn>user\n",
    "<end_of_turn>\n", system_prefix=[_BOS, "<start_of_turn>user\n{{SYSTEM}}\n\n"], stop_words=["<end_of_turn>"],
    special_tokens=["<start_of_turn>", "<end_of_turn>"], trim=("user", "assistant"), name="gemma"))

# Phi-3-mini (current template): the conversation ends with the end-of-text token after the last reply.
register_template("phi3", DeclarativeTemplate(
    (), "<|user|>\n{{QUERY}}<|end|>\n<|assistant|>\n", (), "<|end|>\n", trailer=[_EOS],
    system_prefix="<|system|>\n{{SYSTEM}}<|end|>\n", stop_words=["<|end|>"], name="phi3"))

# Phi-3.5-mini: the same, with an empty system prompt left out.
register_template("phi3_5", DeclarativeTemplate(
    (), "<|user|>\n{{QUERY}}<|end|>\n<|assistant|>\n", (), "<|end|>\n", trailer=[_EOS],
    system_prefix="<|system|>\n{{SYSTEM}}<|end|>\n", stop_words=["<|end|>"], drop_empty_system=True,
    name="phi3_5"))

register_template("deepseek", DeclarativeTemplate(
    [_BOS], "User: {{QUERY}}\n\nAssistant:", (), [_EOS], response_prefix=" ",
    system_prefix=[_BOS, "{{SYSTEM}}\n\n"], name="deepseek"))

register_template("chatglm3", DeclarativeTemplate(
    [["[gMASK]", "sop"]], "<|user|>\n {{QUERY}}<|assistant|>", (), [_EOS], response_prefix="\n ",
    system_prefix=[["[gMASK]", "sop"], "<|system|>\n {{SYSTEM}}"], stop_words=["<|user|>", "<|observation|>"],
    name="chatglm3"))

register_template("chatglm2", DeclarativeTemplate(
    [["[gMASK]", "sop"]], "[Round {{ROUND1}}]\n\n问：{{QUERY}}\n\n答：", "\n\n", [_EOS],
    system_prefix=[["[gMASK]", "sop"], "{{SYSTEM}}\n\n"], name="chatglm2"))

register_template("baichuan2", DeclarativeTemplate(
    "{{SYSTEM}}", [["<reserved_106>"], "{{QUERY}}", ["<reserved_107>"]], (), [_EOS], name="baichuan2"))

register_template("minicpm", DeclarativeTemplate(
    "{{SYSTEM}}", "<用户>{{QUERY}}<AI>", (), [_EOS], trim=("system", "user", "assistant"), name="minicpm"))

register_template("default", DeclarativeTemplate(
    (), "### Human:\n{{QUERY}}\n\n### Assistant:\n", "\n\n", [_EOS], system_prefix="{{SYSTEM}}\n\n",
    default_system="You are a helpful assistant!", name="default"))

register_template("alpaca", DeclarativeTemplate(
    (), "### Instruction:\n{{QUERY}}\n\n### Response:\n", "\n\n", [_EOS], system_prefix="{{SYSTEM}}\n\n",
    default_system="Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.", name="alpaca"))

register_template("vicuna", DeclarativeTemplate(
    (), "USER: {{QUERY}} ASSISTANT:", (), [_EOS], response_prefix=" ", system_prefix="{{SYSTEM}} ",
    default_system="A chat between a curious user and an artificial intelligence assistant. The assistant "
                   "gives helpful, detailed, and polite answers to the user's questions.", name="vicuna"))
