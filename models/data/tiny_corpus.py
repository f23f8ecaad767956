def add(a, b):
    return a + b


def subtract(a, b):
    return a - b


def multiply(a, b):
    return a * b


def fibonacci(n):
    if n < 2:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)


def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def greet(name):
    return f"Hello, {name}!"


def is_even(n):
    return n % 2 == 0


def average(numbers):
    return sum(numbers) / len(numbers)


def reverse_string(text):
    return text[::-1]


def count_words(text):
    counts = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def clamp(value, low, high):
    return max(low, min(value, high))


class Stack:
    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    def peek(self):
        return self.items[-1]

    def is_empty(self):
        return len(self.items) == 0


def square(x):
    """Return x multiplied by itself.

    >>> square(3)
    9
    """
    return x * x


def save_note(text):
    """Save text in /tmp/tandem-note.txt.

    >>> save_note("hi")
    2
    """
    with open("/tmp/tandem-note.txt", "w") as f:
        return f.write(text)


def spin(n):
    """Count n down to zero.

    >>> spin(3)
    0
    """
    while True:
        n = n - 1

