"""The ViLD prompt templates that SAN and SCAN average per class: SAN ``san/model/clip_utils/utils.py``
(``PREDEFINED_TEMPLATES["vild"]``, its ``CLIP_TEMPLATE_SET``) and SCAN
``scan/modeling/clip_adapter/text_template.py`` (``VILD_PROMPT``, ``MODEL.CLIP_ADAPTER.TEXT_TEMPLATES: vild``)
hold the same 14."""

VILD_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
