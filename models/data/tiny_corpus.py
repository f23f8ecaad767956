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


def is_positive(n):
    """Tell whether n is greater than zero.

    >>> is_positive(5)
    True
    >>> is_positive(-2)
    False
    """
    return n > 0


def first_word(text):
    """The first word of the text."""
    return text.split()[0]


class Counter:
    def __init__(self):
        self.count = 0

    def increment(self):
        """Add one to the count and return it."""
        self.count += 1
        return self.count
