"""The docs checks themselves: each one finds what it is there to find (so a passing docs test means something)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from docs_blocks import REPO, argv_error, blocks, command_lines, hone_argvs, yaml_block_error
from hone import docs_ref
from hone.config import KEYS
from hone.config.aliases import aliases_of

PAGE = """# A page

<!-- not-hone -->
```yaml
stage: dpo
per_device_train_batch_size: two
```

```yaml
lora_rank: 16
tuning: lorra
```

- a list item

    ```bash
    pip install -e . && hone train examples/quickstart.yaml --lora_rnk 8 \\
      --num_train_epochs 2   # a comment
    hone export out --gguf q4
    ```

```console
$ hone chat --adapter output/quickstart --prompt "Who are you?"
[hone] hone chat --not-a-command output line
$ HONE_TRACE_ROWS=1 hone train examples/missing.yaml > log.txt
```
"""


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "page.md"
    path.write_text(PAGE, encoding="utf-8")
    return path


def test_blocks_are_found_with_their_lines_and_marks(tmp_path):
    found = blocks(_page(tmp_path))
    assert [(b.lang, b.line, b.not_hone) for b in found] == [("yaml", 5, True), ("yaml", 10, False),
                                                             ("bash", 17, False), ("console", 23, False)]
    assert found[2].text.startswith("pip install")  # the list indentation is removed


def test_a_wrong_config_block_is_reported_and_a_marked_one_is_not_checked(tmp_path):
    other, ours = blocks(_page(tmp_path))[:2]
    assert "tuning" in yaml_block_error(ours) and "lorra" in yaml_block_error(ours)
    assert yaml_block_error(other)  # another tool's config is no hone config: hence the mark


def test_commands_with_unknown_flags_or_values_are_reported(tmp_path):
    bash, console = blocks(_page(tmp_path))[2:]
    lines = list(command_lines(bash))
    assert [offset for offset, _ in lines] == [0, 2]  # the continued line is one command
    argvs = [argv for _, line in lines for argv in hone_argvs(line)]
    assert argvs[0] == ["train", "examples/quickstart.yaml", "--lora_rnk", "8", "--num_train_epochs", "2"]
    assert "lora_rank" in argv_error(argvs[0])  # unknown key, with the closest one named
    assert "q4" in argv_error(argvs[1])  # not a choice of --gguf
    console_argvs = [argv for _, line in command_lines(console) for argv in hone_argvs(line)]
    assert len(console_argvs) == 2  # the output line is no command
    assert argv_error(console_argvs[0]) is None
    assert console_argvs[1] == ["train", "examples/missing.yaml"]  # the redirect is not an argument
    assert "does not exist" in argv_error(console_argvs[1])


def test_reference_pages_name_every_key_alias_and_flag():
    pages = docs_ref.render()
    for lang in docs_ref.LANGS:
        config, cli = pages[f"{lang}/reference/config.md"], pages[f"{lang}/reference/cli.md"]
        for key in KEYS:
            assert f'<a id="{key}"></a>`{key}`' in config
            assert all(f"`{alias}`" in config for alias in aliases_of(key))
        for name, parser in docs_ref.subparsers().items():
            assert f"## hone {name} {{#hone-{name}}}" in cli
            assert all(f"`{opt}`" in cli for a in parser._actions for opt in a.option_strings if opt != "-h")


def test_a_stale_reference_page_is_found_and_rewritten(tmp_path):
    assert len(docs_ref.write(tmp_path)) == 4 and docs_ref.stale(tmp_path) == []
    page = tmp_path / "zh/reference/cli.md"
    page.write_text(page.read_text(encoding="utf-8").replace("--gguf", "--ggml"), encoding="utf-8")
    assert docs_ref.stale(tmp_path) == [page]
    assert docs_ref.main(["--docs-dir", str(tmp_path), "--check"]) == 1
    assert docs_ref.main(["--docs-dir", str(tmp_path)]) == 0 and docs_ref.stale(tmp_path) == []


def _hooks():
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", REPO / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chinese_line_breaks_are_joined_outside_code_and_headings():
    source = ("## 标题\n正文第一行，\n  接着第二行。LoRA\n训练，“引号”\n继续\n\n```bash\n# 中文\n# 注释\n```\n"
              "- 列表\n- 第二项\n> 引用第一行\n> 第二行\n")
    assert _hooks().join_cjk_lines(source) == (
        "## 标题\n正文第一行，接着第二行。LoRA\n训练，“引号”继续\n\n```bash\n# 中文\n# 注释\n```\n- 列表\n- 第二项\n"
        "> 引用第一行第二行\n")
