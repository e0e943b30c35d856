"""The shell: the ``drops`` command, the supervisor of ``drops up`` and the local Kafka broker.

It sits on top of the stages and is the only product code that imports more than one of them.
"""
