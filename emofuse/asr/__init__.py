"""Speech recognition for corpora without transcripts: Whisper via faster-whisper (CTranslate2).

`whisper.py` loads a model and transcribes batches of waveforms; `transcribe.py` runs it over a
manifest (resumable); `wer.py` scores against gold text; `tiny.py` builds a tiny random model.
"""
