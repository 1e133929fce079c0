from enum import StrEnum


class PluginLang(StrEnum):
    PYTHON = "python"
    WASM = "wasm"

    def __str__(self) -> str:
        return str(self.value)
