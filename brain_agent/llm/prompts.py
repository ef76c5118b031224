"""Chat prompts that turn an instruction into GoalSet JSON.

The prompt is the same for every backend: a short system message that explains the goal
types, a few worked examples (English and Chinese) on a fixed example scene, then the live
scene's vocabulary and the instruction. The examples come first and never change, so a local
model can reuse their cached attention state across calls. Rejections from a previous attempt
(unknown object, impossible goal, validation violations) are appended as feedback.
"""

from __future__ import annotations

import re

from robobus.brain_agent.context import PlanContext

SYSTEM = """You convert a robot instruction into JSON goals. Reply with JSON only.
First write "reading": the instruction restated as plain English in these forms, with the
scene's names: "bring X to P", "put X in C", "R, go to P", "pick up X", "hand X to R",
"cancel task T"; X may be "the K nearest Y", "all K on P", "a K, but not N"; join with "then".
The goals must mean exactly what the reading says; it is checked.
Goal types:
- deliver: bring objects to a place or into a container "to" (optional "robot" who does it).
- pickup: a robot picks up / takes / grabs one object and keeps holding it.
- handto: give an object to the robot "robot".
- goto: the robot "robot" goes to "place".
- cancel: cancel or stop the task "task_id".
An object is {"name": N} when the instruction names that one object ("the apple", "box_07"),
or {"kind": K} for "a K", "any K", "all K", "the K nearest X"; a kind may add "nearest_to": X
(the one nearest to X), "all_at": P (every one at place or container P), "count": how many,
or "exclude": [N] (objects to leave out). Name a robot only when the instruction names it.
Use only names listed in the scene. An instruction in another language (Chinese) is read
into English in "reading" the same way."""

EXAMPLE_SCENE = """places: pantry, counter, porch
objects: plate (kind plate, at counter), mug1 (kind mug, at counter), mug2 (kind mug, at pantry), \
spoon (kind spoon, at pantry), tray (kind tray, at counter)
containers: tray
robots: arm_1, rover"""


def _a(reading: str, goals: str) -> str:
    return '{"reading":"' + reading + '","goals":[' + goals + "]}"


_D = '{"type":"deliver","objects":[%s],"to":"%s"}'
EXAMPLES: list[tuple[str, str]] = [
    ("Bring the mug nearest the plate and the spoon to the porch",
     _a("bring the mug nearest the plate and the spoon to the porch",
        _D % ('{"kind":"mug","nearest_to":"plate"},{"name":"spoon"}', "porch"))),
    ("put all mugs on the counter on the tray",
     _a("put all mug on the counter in the tray", _D % ('{"kind":"mug","all_at":"counter"}', "tray"))),
    ("the porch could use that spoon",
     _a("bring the spoon to the porch", _D % ('{"name":"spoon"}', "porch"))),
    ("Bring mug1 and the plate to the porch",
     _a("bring mug1 and the plate to the porch", _D % ('{"name":"mug1"},{"name":"plate"}', "porch"))),
    ("rover, head over to the porch",
     _a("rover, go to the porch", '{"type":"goto","robot":"rover","place":"porch"}')),
    ("hand a mug to arm_1",
     _a("hand a mug to arm_1", '{"type":"handto","object":{"kind":"mug"},"robot":"arm_1"}')),
    ("any mug but mug1 goes to the pantry",
     _a("bring a mug to the pantry, but not mug1",
        _D % ('{"kind":"mug","exclude":["mug1"]}', "pantry"))),
    ("the spoon belongs in the tray", _a("put the spoon in the tray", _D % ('{"name":"spoon"}', "tray"))),
    ("Put the mug nearest the spoon in the tray, then bring the tray to the porch",
     _a("put the mug nearest the spoon in the tray, then bring the tray to the porch",
        (_D % ('{"kind":"mug","nearest_to":"spoon"}', "tray")) + ","
        + (_D % ('{"name":"tray"}', "porch")))),
    ("把勺子送到门廊", _a("bring a spoon to the porch", _D % ('{"kind":"spoon"}', "porch"))),
    ("拿离托盘最近的勺子", _a("pick up the spoon nearest the tray",
                               '{"type":"pickup","object":{"kind":"spoon","nearest_to":"tray"}}')),
    ("cancel task t-42", _a("cancel task t-42", '{"type":"cancel","task_id":"t-42"}')),
]

#: Past this many objects the scene lists kinds and counts instead of every object.
MAX_LISTED_OBJECTS = 60
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def detect_language(text: str) -> str:
    """``zh`` when the text has CJK ideographs, ``en`` when it is ASCII, else ``other``."""
    if _CJK.search(text):
        return "zh"
    return "en" if text.isascii() else "other"


def render_scene(ctx: PlanContext) -> str:
    """The scene's vocabulary in the examples' format (names, kinds, locations, robots)."""
    world = ctx.world
    objects = sorted(world.objects.values(), key=lambda o: o.name)
    if len(objects) <= MAX_LISTED_OBJECTS:
        listed = ", ".join(f"{o.name} (kind {o.kind}, at {o.location})" for o in objects)
    else:
        counts: dict[str, int] = {}
        for o in objects:
            counts[o.kind] = counts.get(o.kind, 0) + 1
        listed = ", ".join(f"{n} of kind {k}" for k, n in sorted(counts.items()))
    containers = ", ".join(o.name for o in objects if o.container) or "(none)"
    robots = ", ".join(sorted(set(ctx.fleet) | set(world.robots))) or "(none)"
    return (f"places: {', '.join(sorted(world.places))}\nobjects: {listed}\n"
            f"containers: {containers}\nrobots: {robots}")


def _turn(scene: str, instruction: str) -> str:
    return f"Scene:\n{scene}\nInstruction: {instruction}"


def prefix_messages() -> list[dict[str, str]]:
    """The fixed part of every prompt: system message and worked examples."""
    messages = [{"role": "system", "content": SYSTEM}]
    for i, (instruction, answer) in enumerate(EXAMPLES):
        scene = EXAMPLE_SCENE if i == 0 else "(same as above)"
        messages.append({"role": "user", "content": _turn(scene, instruction)})
        messages.append({"role": "assistant", "content": answer})
    return messages


def messages_for(text: str, ctx: PlanContext, feedback: list[str] | None = None) -> list[dict[str, str]]:
    """The full chat for ``text`` on ``ctx``'s scene, with earlier rejections as feedback."""
    content = _turn(render_scene(ctx), text)
    reasons = list(feedback if feedback is not None else ctx.feedback)
    if reasons:
        joined = "\n".join(f"- {r}" for r in reasons[-3:])
        content += f"\nYour previous answer was rejected:\n{joined}\nAnswer again, fixing that."
    return [*prefix_messages(), {"role": "user", "content": content}]
