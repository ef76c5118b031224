"""Chinese instructions into tokens: the grammar's function words, the scene's labels, counts.

Longest match at each position over one table (the grammar's words, fixed here) and the
scene vocabulary's labels (:attr:`Vocabulary.labels`): a label wins over a shorter function
word ("水果刀" over "水果"), a function word over a shorter label. Runs in Latin script
("realman_1", "g1") are looked up as English names. No segmenter package: the table is the
dictionary, and the scene's own words are what a general segmenter would not know (issue 15).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from robobus.brain_agent.vocab import Entity, Vocabulary, tokenize

TokenKind = Literal["ent", "kw", "num", "word", "unk"]

#: Function word -> its role in the grammar (parser_zh.py).
KEYWORDS: dict[str, str] = {}


def _words(role: str, *words: str) -> None:
    for w in words:
        KEYWORDS[w] = role


_words("sep", "然后", "然后再", "并", "并且", "再", "接着", "之后", "随后", "最后", "，", ",", "。",
       "后", "以后", "完了", "完后", "然后去把",
       "；", ";", "！", "!", "：", ":", "、然后", "同时")
_words("ba", "把", "将")
_words("put", "拿到", "送到", "放进", "放到", "放在", "放入", "搬到", "带到", "移到", "运到", "递到",
       "送去", "拿去", "带去", "搬去", "放回", "放回到", "挪到", "送往", "运往", "转移到", "装进",
       "装到", "放进去", "放到去", "送至", "运至", "放")
_words("to", "到", "至", "往", "进", "去到")
_words("give", "交给", "递给", "送给", "拿给", "带给", "给", "转交给", "交到")
_words("bring", "拿来", "拿过来", "送来", "送过来", "带来", "带过来", "取来", "拿回来", "带回来",
       "递过来")
_words("deliver", "递送", "送", "运送", "配送", "搬运", "带", "运", "递", "送一下")
_words("pick", "拿起", "抓起", "捡起", "拾起", "拿起来", "抓取", "拿", "取", "抓", "拾取", "拿上",
       "拿好", "拿住", "抓住", "举起", "取出", "拿出")
_words("go", "去", "前往", "走到", "移动到", "导航到", "开到", "回到", "过去", "移动去", "开去",
       "走去", "到达")
_words("come", "过来", "来")
_words("let", "让", "叫", "派", "命令")
_words("polite", "请", "麻烦", "麻烦你", "帮忙", "你", "能不能", "能否", "可以", "吧", "一下",
       "谢谢", "好吗", "呢", "啊", "您", "请你", "劳驾", "马上", "立刻", "现在", "赶紧", "快点",
       "尽快", "先", "都", "全", "也", "一起", "全都", "一下子", "那个", "这个", "那些", "这些",
       "那把", "这把", "那只", "这只", "该")
_words("it", "它", "它们", "他们", "她们")
_words("ba", "去把")
_words("want", "我要", "我想要", "我需要", "我想", "给我来", "来一个")
_words("forme", "帮我", "给我", "替我")
_words("me", "我", "这里", "这儿", "这边", "我这里", "我这儿", "我这边", "我这", "我身边", "我那里",
       "我这里来", "我们", "咱们")
_words("near", "离", "距离", "离着")
_words("nearest", "最近的", "最近", "最接近的", "最靠近的")
_words("nearto", "最靠近", "最接近")
_words("beside", "旁边", "附近", "旁边的", "附近的", "边上")
_words("de", "的")
_words("on", "上", "上面", "后面", "前面", "下面", "下", "里", "里面", "中", "内", "上边", "之中",
       "当中", "那里", "那儿", "那边")
_words("all", "所有", "所有的", "全部", "全部的", "每个", "每一个", "一切")
_words("and", "和", "跟", "与", "以及", "、", "还有", "及")
_words("cancel", "取消", "终止", "停止", "取消掉", "撤销", "中止")
_words("task", "任务", "号任务")

_NUMERALS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
             "九": 9, "十": 10, "俩": 2, "几": 0}
_CLASSIFIERS = set("个把只根支瓶块张件本杯盒条颗台位袋份双箱盘碗罐枚")
_LATIN_RUN = re.compile(r"[A-Za-z0-9_\-.#]+(?: [A-Za-z0-9_\-]+)*")
_SPACE = re.compile(r"\s+")
_KW_LEN = max(len(w) for w in KEYWORDS)


@dataclass(frozen=True, slots=True)
class Token:
    """One piece of the sentence: a scene entity, a function word, a count, a Latin word."""

    kind: TokenKind
    text: str
    role: str = ""
    ents: tuple[Entity, ...] = ()
    count: int = 0


def segment(text: str, vocab: Vocabulary) -> list[Token]:
    """Tokens of ``text``: longest match of labels and function words, then counts, Latin runs
    and single unknown characters."""
    out: list[Token] = []
    i, n = 0, len(text)
    longest = max(_KW_LEN, vocab.label_len)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        tok, width = _match(text, i, min(longest, n - i), vocab)
        if tok is None:
            tok, width = _count(text, i) or _latin(text, i, vocab) or (Token("unk", text[i]), 1)
        out.append(tok)
        i += width
    return out


def _match(text: str, i: int, longest: int, vocab: Vocabulary) -> tuple[Token | None, int]:
    for width in range(longest, 0, -1):
        piece = text[i:i + width]
        ents = vocab.lookup_label(piece)
        if ents:
            return Token("ent", piece, ents=tuple(ents)), width
        role = KEYWORDS.get(piece)
        if role is not None:
            return Token("kw", piece, role=role), width
    return None, 0


def _count(text: str, i: int) -> tuple[Token, int] | None:
    """``两个`` / ``一把`` / ``3个`` / ``十二只`` -> a count token."""
    j = i
    while j < len(text) and (text[j] in _NUMERALS or text[j].isdigit()):
        j += 1
    if j == i or j >= len(text) or text[j] not in _CLASSIFIERS:
        return None
    value = chinese_number(text[i:j])
    if value is None:
        return None
    return Token("num", text[i:j + 1], count=value), j + 1 - i


def chinese_number(s: str) -> int | None:
    """``3`` -> 3, ``两`` -> 2, ``十二`` -> 12, ``二十`` -> 20; None for anything else."""
    if s.isdigit():
        return int(s)
    if any(c not in _NUMERALS for c in s):
        return None
    if "十" not in s:
        return _NUMERALS[s] if len(s) == 1 else None
    tens, _, ones = s.partition("十")
    t = _NUMERALS.get(tens, 0) if tens else 1
    o = _NUMERALS.get(ones, 0) if ones else 0
    return t * 10 + o


def _latin(text: str, i: int, vocab: Vocabulary) -> tuple[Token, int] | None:
    m = _LATIN_RUN.match(text, i)
    if m is None:
        return None
    run = _SPACE.sub(" ", m.group()).strip(" .")
    words = tuple(tokenize(run))
    ents = vocab.lookup(tuple(vocab.singular(w) for w in words)) if words else []
    if ents:
        return Token("ent", run, ents=tuple(ents)), m.end() - i
    return Token("word", run), m.end() - i
