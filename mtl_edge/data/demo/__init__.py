"""The built-in demo corpus: real audio that exists offline, rendered into a multi-task corpus.

Nothing here is committed audio: the corpus is rendered on first use from Debian packages
(mbrola voice recordings, the General MIDI soundfont, game and theme sound recordings).
"""
