import os

# Tests never reach the Hugging Face Hub: everything they load is local or packaged.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
