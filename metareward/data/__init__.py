"""Data shipped with the package (read with ``importlib.resources.files("metareward.data")``).

``llmbar_natural.json``: the Natural set of LLMBar (Zeng et al. 2023, "Evaluating Large Language Models at
Evaluating Instruction Following", ICLR 2024), ``Dataset/LLMBar/Natural/dataset.json`` of
github.com/princeton-nlp/LLMBar at commit 900616bff90b6c6c8e1681f7d079250637c55992, byte for byte: 100 pairs
``{input, output_1, output_2, label}``, 91,269 bytes. Written by ``bench/llmbar_fixtures.py``; read with
``metareward.evals.llmbar.read_dataset(metareward.evals.llmbar.natural_path())``. Its license, LLMBar's:

    MIT License

    Copyright (c) 2023 Princeton Natural Language Processing

    Permission is hereby granted, free of charge, to any person obtaining a copy
    of this software and associated documentation files (the "Software"), to deal
    in the Software without restriction, including without limitation the rights
    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
    copies of the Software, and to permit persons to whom the Software is
    furnished to do so, subject to the following conditions:

    The above copyright notice and this permission notice shall be included in all
    copies or substantial portions of the Software.

    THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
    SOFTWARE.
"""
