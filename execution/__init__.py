"""The engine: workflows, their instances and the sandbox that runs them.

Its words (activation, lease, generation, hold, kept, settle, due) and the rules of
an instance's lifecycle are defined in execution.lifecycle's docstring.
"""
