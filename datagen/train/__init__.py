"""The bundled trainer: a factorized diffusion transformer over frame sequences (UniReal, Emu Video, Emu Edit)."""
