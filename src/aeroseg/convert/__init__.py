"""Backbone architectures shipped with the package, the CLIP tokenizer, and loaders of original checkpoints.

- ``aeroseg.convert.arch``: ``load_arch_config(name)``, ``ARCHITECTURES``
- ``aeroseg.convert.tokenizer``: ``clip_tokenizer()``, ``clean_text(text)``
- ``aeroseg.convert.clip``: ``load_original_clip(path)`` (OpenAI / open_clip files -> ``CLIPModel``)
- ``aeroseg.convert.sam``: ``load_original_sam(path)`` (segment-anything files -> ``SamModel``)
- ``aeroseg.convert.sam2``: ``load_original_sam2(path)`` (SAM2 / SAM2.1 files -> ``Sam2Model``)
- ``aeroseg.convert.catseg``: ``read_catseg(path)`` (CAT-Seg / OVRS checkpoints -> config, CLIP and renamed tensors)
"""
