"""Text to speech with transformers' VITS (the MMS-TTS models), a sentence at a time."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from edge_server.backends import SPEECH_OUT

from . import device as devices

SENTENCE_END = re.compile(r"(?<=[.!?…。！？])\s+|\n+")
LONGEST = 400  # characters spoken in one pass; VITS' attention grows with the square of the length
PAUSE = 0.25  # seconds of silence between sentences


def sentences(text: str) -> list[str]:
    """Split at sentence ends, then split sentences longer than LONGEST at commas or spaces."""
    pieces = []
    for sentence in SENTENCE_END.split(text):
        sentence = sentence.strip()
        while len(sentence) > LONGEST:
            cut = max(sentence.rfind(",", 0, LONGEST), sentence.rfind(" ", 0, LONGEST)) + 1
            cut = cut if cut > 1 else LONGEST  # one long word: cut it where the limit falls
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    return pieces


class SpeechModel(devices.Held):
    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.capabilities = frozenset({SPEECH_OUT})
        self.sampling_rate = int(model.config.sampling_rate)

    @classmethod
    def load(cls, folder: Path, device) -> "SpeechModel":
        from transformers import AutoTokenizer, VitsModel

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = VitsModel.from_pretrained(folder, variant=devices.weights_variant(folder)).to(device).eval()
        # float32 on any device: VITS' flows are unstable in half precision
        return cls(model, tokenizer, device)

    def speak(self, text: str) -> Iterator:
        """Yield float32 samples a sentence at a time, with a short pause between sentences."""
        import numpy as np
        import torch

        pause = np.zeros(int(self.sampling_rate * PAUSE), dtype=np.float32)
        spoken = False
        for sentence in sentences(text):
            inputs = self.tokenizer(sentence, return_tensors="pt").to(self.device)
            if not (inputs["input_ids"] != self.tokenizer.pad_token_id).any():
                continue  # nothing this model's alphabet can say (another script, only symbols): only blanks
            with torch.inference_mode():
                samples = self.model(**inputs).waveform[0].float().cpu().numpy()
            if spoken:
                yield pause
            spoken = True
            yield samples
