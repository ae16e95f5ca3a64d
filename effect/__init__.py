"""The spectro-fx engine: streaming STFT, codemap effects, resynthesis, and the `spectro-fx` CLI.

Needs only an exported model file; never imports training code.
"""
