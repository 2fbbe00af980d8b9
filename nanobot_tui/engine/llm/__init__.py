"""Talking to models: one request type, one HTTP transport, two clients on it.

request.py         ChatRequest: the messages and settings of one chat, sent by any client
chat_client.py     ChatClient: the protocol every client satisfies
results.py         ChatResult and the stream events both clients give
errors.py          LLMError and its subclasses
transport.py       the shared HTTP side: pooling, retries, SSE, the key, closing
streaming.py       the stream loop both clients share
openai.py          LLMClient: llama.cpp servers and any OpenAI-compatible endpoint
openai_answers.py  reading OpenAI-compatible answers and streams
anthropic.py       AnthropicClient: the Messages API, translated both ways
"""
