"""The modes of ``avsplit separate``: each plans a clip's stems; :mod:`avsplit.separate` writes them.

One module per mode family (no mode imports another): :mod:`~avsplit.modes.speech`
(``onscreen``, ``speakers``) and :mod:`~avsplit.modes.instruments` (``instruments``);
:mod:`~avsplit.modes.plan` holds what they share.
"""
